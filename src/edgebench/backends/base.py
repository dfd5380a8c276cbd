"""The one-method backend interface and the records that cross it.

A failed request is a measurement: `ChatResponse.error` / `timed_out` say what happened and the
caller scores it as a failure class; only a request we refuse to send raises (`RequestRefused`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgebench.errors import EdgebenchError

__all__ = ["Backend", "ChatRequest", "ChatResponse", "RequestRefused", "ToolCall"]


class RequestRefused(EdgebenchError):
    """We will not send this request (e.g. it cannot fit the backend's context limit)."""


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] | str  # str when the model emitted arguments that are not JSON


class ChatRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: list[dict[str, Any]] = Field(default_factory=list)
    prompt: str | None = None  # completion mode (base models without a chat template)
    tools: list[dict[str, Any]] | None = None
    temperature: float = 0.0
    seed: int = 42
    max_tokens: int = 512
    stop: list[str] | None = None
    extra: dict[str, Any] = Field(
        default_factory=dict
    )  # server-specific fields, e.g. llama-server's ignore_eos


class ChatResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    content: str = ""
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    ttft_s: float | None = None
    wall_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    timings: dict[str, float] | None = None  # llama-server's own, when it sends them
    error: str | None = None
    timed_out: bool = False


class Backend(ABC):
    """Anything that answers a chat (or completion) request. Fakes implement this too."""

    name: str

    @abstractmethod
    def chat(self, req: ChatRequest) -> ChatResponse: ...

    def close(self) -> None:  # noqa: B027 — optional hook
        """Release connections or processes."""
