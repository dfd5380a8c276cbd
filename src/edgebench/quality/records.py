"""What a validator reads (`ModelOutput`) and what it returns (`Verdict`, with a `FailureClass`).

Failure classes keep format apart from capability: a right answer in the wrong shape is
`unparseable` / `schema_invalid`, never `wrong` (BFCL's error_type, inspect's NOANSWER).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FailureClass", "ModelOutput", "ToolCallOut", "Verdict"]


class FailureClass(StrEnum):
    CORRECT = "correct"
    WRONG = "wrong"  # well-formed answer, wrong content
    REFUSED = "refused"  # "I can't…", "as an AI…"
    NO_CALL = "no_call"  # a tool call was needed and none was made
    UNPARSEABLE = "unparseable"  # no answer could be read (or not in the required wrapper-free form)
    SCHEMA_INVALID = "schema_invalid"  # parsed, but breaks the JSON / tool schema
    WRONG_FUNCTION = "wrong_function"  # called an unexpected function (or any, when none was wanted)
    WRONG_ARGS = "wrong_args"  # right function, wrong or invented argument values
    EMPTY = "empty"  # nothing left after sanitising (or the request failed)
    TIMEOUT = "timeout"  # the request, or the code under test, ran out of time
    TEMPLATE_MISSING = "template_missing"  # the model has no chat template: not scored as a capability
    UNSANDBOXED = "unsandboxed"  # code not run: no isolation here and unsandboxed runs not allowed


class ToolCallOut(BaseModel):
    """One call as the server returned it; `arguments` is a str when it was not valid JSON."""

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ModelOutput(BaseModel):
    """One model reply. Extra fields are ignored, so a backend `ChatResponse.model_dump()` validates."""

    model_config = ConfigDict(frozen=True)

    content: str = ""
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] = Field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    timed_out: bool = False
    template_missing: bool = False


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    failure: FailureClass
    detail: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Verdict:
        if self.passed != (self.failure is FailureClass.CORRECT):
            raise ValueError(f"passed={self.passed} contradicts failure={self.failure}")
        return self

    @classmethod
    def ok(cls, detail: str = "") -> Verdict:
        return cls(passed=True, failure=FailureClass.CORRECT, detail=detail)

    @classmethod
    def fail(cls, failure: FailureClass, detail: str) -> Verdict:
        return cls(passed=False, failure=failure, detail=detail)
