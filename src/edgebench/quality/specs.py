"""Validator specs: one frozen model per validator kind, told apart by `kind` in the suite YAML.

Specs check themselves when a suite loads (regexes compile, JSON schemas are valid, hidden tests
compile, expected tool calls fit their tool's schema), so a broken item fails at load, not at scoring.
"""

from __future__ import annotations

import ast
import re
from typing import Annotated, Any, Literal

import jsonschema  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgebench.quality.coderun import plan_tests
from edgebench.quality.numbers import UNITS

__all__ = [
    "AllSpec",
    "ArgRule",
    "BulletsSpec",
    "ChoiceSpec",
    "CodeSpec",
    "ContainsSpec",
    "CsvSpec",
    "ExactSpec",
    "ExpectedCall",
    "JsonSpec",
    "NumericSpec",
    "RegexSpec",
    "SentencesSpec",
    "ToolCallSpec",
    "ValidatorSpec",
    "WordsSpec",
    "tool_parameters",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _Bounds(_Spec):
    """An exact `count`, or `min` and/or `max`."""

    count: int | None = Field(default=None, ge=0)
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> _Bounds:
        if self.count is None and self.min is None and self.max is None:
            raise ValueError("give count, min or max")
        if self.count is not None and (self.min is not None or self.max is not None):
            raise ValueError("give count, or min/max, not both")
        return self

    def check(self, n: int) -> str | None:
        """None when `n` is within bounds, else what was wanted."""
        if self.count is not None and n != self.count:
            return f"exactly {self.count}"
        if self.min is not None and n < self.min:
            return f"at least {self.min}"
        if self.max is not None and n > self.max:
            return f"at most {self.max}"
        return None


class NumericSpec(_Spec):
    kind: Literal["numeric"]
    answer: float
    tolerance: float = Field(default=1e-6, ge=0)  # absolute
    rel_tolerance: float = Field(default=0.0, ge=0)
    # relative tolerance for a value converted from another unit or written "about …": models round
    # conversions ("90 km/h (≈ 56 mph)"), so 56 mph must agree with 90 km/h
    approx_tolerance: float = Field(default=0.01, ge=0, lt=0.5)
    unit: str | None = None  # the unit `answer` is in; other units of its dimension are converted
    cues: list[str] = []  # words naming the asked quantity ("mean"), to pick it among several numbers

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in UNITS:
            raise ValueError(f"unknown unit {v!r}")
        return v


class ExactSpec(_Spec):
    kind: Literal["exact"]
    answer: Annotated[list[str], Field(min_length=1)]  # any of these
    case_sensitive: bool = False

    @field_validator("answer", mode="before")
    @classmethod
    def _wrap(cls, v: Any) -> Any:
        return _listify(v)


class ContainsSpec(_Spec):
    kind: Literal["contains"]
    any_of: list[str] = []
    all_of: list[str] = []
    none_of: list[str] = []  # must not appear at all, not even negated
    # tempting wrong answers: naming one *as the answer* fails, "Canberra, not Sydney" passes
    distractors: list[str] = []
    cues: list[str] = []  # words naming what is asked ("capital"), to pick among several names
    case_sensitive: bool = False
    word_boundary: bool = True  # "Au" must not match inside "Australia"

    @model_validator(mode="after")
    def _needs_something(self) -> ContainsSpec:
        if not self.any_of and not self.all_of:
            raise ValueError("give any_of and/or all_of")
        return self


class RegexSpec(_Spec):
    kind: Literal["regex"]
    pattern: str
    ignore_case: bool = True
    multiline: bool = False
    dotall: bool = False
    full: bool = False  # the whole (stripped) answer must match

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"bad regex: {e}") from e
        return v

    def compiled(self) -> re.Pattern[str]:
        flags = (re.I if self.ignore_case else 0) | (re.M if self.multiline else 0)
        return re.compile(self.pattern, flags | (re.S if self.dotall else 0))


class ChoiceSpec(_Spec):
    """One of a few words (valid/invalid, yes/no); `aliases` add phrasings ("not valid")."""

    kind: Literal["choice"]
    options: Annotated[list[str], Field(min_length=2)]
    answer: str
    aliases: dict[str, list[str]] = {}
    pick: Literal["first", "last"] = "first"  # which mention counts when nothing else decides
    cues: list[str] = []  # words naming what is asked ("shortest"), to pick among several options

    @model_validator(mode="after")
    def _answer_is_option(self) -> ChoiceSpec:
        known = {o.lower() for o in self.options}
        if self.answer.lower() not in known:
            raise ValueError(f"answer {self.answer!r} is not one of the options")
        if stray := [k for k in self.aliases if k.lower() not in known]:
            raise ValueError(f"aliases for unknown options {stray}")
        return self


class JsonSpec(_Spec):
    kind: Literal["json"]
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    raw: bool = False  # the reply must be the JSON alone: no fences, no prose
    values: dict[str, Any] = {}  # top-level keys that must hold these values (strings case-insensitive)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(v)
            except jsonschema.SchemaError as e:
                raise ValueError(f"bad JSON schema: {e.message}") from e
        return v


class SentencesSpec(_Bounds):
    kind: Literal["sentences"]


class WordsSpec(_Bounds):
    kind: Literal["words"]


class BulletsSpec(_Bounds):
    kind: Literal["bullets"]
    only: bool = False  # nothing but bullet lines


class CsvSpec(_Spec):
    kind: Literal["csv"]
    header: list[str] | None = None  # expected column names (case-insensitive), in order
    columns: int | None = Field(default=None, ge=1)  # defaults to len(header)
    rows: int = Field(ge=0)  # data rows, header excluded
    raw: bool = False  # no fences, no prose around the table

    @model_validator(mode="after")
    def _width_known(self) -> CsvSpec:
        if self.header is None and self.columns is None:
            raise ValueError("give header or columns")
        if self.header is not None and self.columns is not None and len(self.header) != self.columns:
            raise ValueError("columns disagrees with header")
        return self

    @property
    def width(self) -> int:
        return self.columns if self.columns is not None else len(self.header or [])


class CodeSpec(_Spec):
    """Runs the model's Python in a sandbox; `tests` are asserts on calls to `entry`, checked outside
    it on the returned plain values (quality/coderun.py says what a test may contain)."""

    kind: Literal["code"]
    entry: str | None = None  # the function the code must define; required (None only to say so)
    setup: str = ""  # run before the model's code
    tests: Annotated[list[str], Field(min_length=1)]
    requires: list[str] = []  # AST node types the code must contain, e.g. ListComp
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=64)

    @field_validator("tests")
    @classmethod
    def _tests_compile(cls, v: list[str]) -> list[str]:
        for test in v:
            try:
                compile(test, "<test>", "exec")
            except SyntaxError as e:
                raise ValueError(f"test does not compile: {test!r}: {e.msg}") from e
        return v

    @field_validator("requires")
    @classmethod
    def _known_nodes(cls, v: list[str]) -> list[str]:
        if bad := [n for n in v if not isinstance(getattr(ast, n, None), type)]:
            raise ValueError(f"unknown AST node types {bad}")
        return v

    @model_validator(mode="after")
    def _tests_checkable(self) -> CodeSpec:
        if not self.entry:
            raise ValueError("give entry: the function the tests call")
        plan_tests(self.entry, self.tests)  # raises ValueError naming the test it cannot check
        return self


class ArgRule(_Spec):
    """How one argument is matched; without a rule it must equal the canonical value (normalised)."""

    any_of: list[Any] = []  # more accepted values, besides the canonical one
    contains_all: list[str] = []  # for free text: these substrings (case-insensitive) suffice
    # an arithmetic expression: accepted when it evaluates (safely, via `ast`) to the canonical value
    expression: bool = False
    # a free-text query: each keyword (or one of a group) must appear as whole words, in any order,
    # case and punctuation aside ("World Cup 2022 champion" has 2022 and "world cup")
    keywords: list[str | list[str]] = []
    excludes: list[str] = []  # words that must not appear ("not", "failed" in "the build passed")
    any: bool = False  # any schema-valid value
    optional: bool = False  # may be left out
    tolerance: float | None = Field(default=None, ge=0)


class ExpectedCall(_Spec):
    name: str
    arguments: dict[str, Any] = {}  # the canonical call; must validate against the tool's schema
    match: dict[str, ArgRule] = {}

    @model_validator(mode="after")
    def _rules_name_arguments(self) -> ExpectedCall:
        if stray := sorted(set(self.match) - set(self.arguments)):
            raise ValueError(f"call {self.name}: match rules for arguments not in the call: {stray}")
        return self


def tool_parameters(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name → parameters schema of OpenAI-style tools; ValueError on a malformed tool."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise ValueError("each tool needs type: function and a function object")
        name = fn.get("name")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(name, str) or not name:
            raise ValueError("a tool function has no name")
        if name in out:
            raise ValueError(f"tool {name!r} is defined twice")
        if not isinstance(params, dict) or params.get("type") != "object":
            raise ValueError(f"tool {name!r}: parameters must be an object schema")
        try:
            jsonschema.Draft202012Validator.check_schema(params)
        except jsonschema.SchemaError as e:
            raise ValueError(f"tool {name!r}: bad parameters schema: {e.message}") from e
        out[name] = params
    return out


class ToolCallSpec(_Spec):
    """BFCL-style: `call` (one or parallel calls), `none` (irrelevance), `ask` (missing argument)."""

    kind: Literal["tool_call"]
    expect: Literal["call", "none", "ask"] = "call"
    calls: list[ExpectedCall] = []
    function: str | None = None  # for `ask`: the tool that lacks an argument
    missing: list[str] = []  # for `ask`: the required arguments the user did not give
    # for `ask`: words that name each missing argument in a request ("city", "location"); the
    # argument's own name is always one
    ask_terms: dict[str, list[str]] = {}
    tools: list[dict[str, Any]] | None = None  # filled from the item's tools when the suite loads

    @model_validator(mode="after")
    def _consistent(self) -> ToolCallSpec:
        if self.expect == "call" and not self.calls:
            raise ValueError("expect: call needs calls")
        if self.expect != "call" and self.calls:
            raise ValueError(f"expect: {self.expect} takes no calls")
        if self.expect == "ask" and (not self.function or not self.missing):
            raise ValueError("expect: ask needs function and missing")
        if stray := sorted(set(self.ask_terms) - set(self.missing)):
            raise ValueError(f"ask_terms for arguments that are not missing: {stray}")
        if self.tools is None:
            return self
        params = tool_parameters(self.tools)
        if self.expect == "ask":
            assert self.function is not None
            if self.function not in params:
                raise ValueError(f"function {self.function!r} is not among the tools")
            required = set(params[self.function].get("required", []))
            if absent := sorted(set(self.missing) - required):
                raise ValueError(f"missing arguments {absent} are not required by {self.function}")
        for call in self.calls:
            if call.name not in params:
                raise ValueError(f"expected call {call.name!r} is not among the tools")
            errors = sorted(
                jsonschema.Draft202012Validator(params[call.name]).iter_errors(call.arguments), key=str
            )
            if errors:
                raise ValueError(f"expected call {call.name} breaks its schema: {errors[0].message}")
        return self


class AllSpec(_Spec):
    """Every check must pass; the first failure is the verdict."""

    kind: Literal["all"]
    checks: Annotated[list[ValidatorSpec], Field(min_length=1)]

    @field_validator("checks")
    @classmethod
    def _no_tool_calls(cls, v: list[ValidatorSpec]) -> list[ValidatorSpec]:
        if any(isinstance(c, ToolCallSpec) for c in v):
            raise ValueError("tool_call cannot be nested in all")
        return v


ValidatorSpec = Annotated[
    NumericSpec
    | ExactSpec
    | ContainsSpec
    | RegexSpec
    | ChoiceSpec
    | JsonSpec
    | SentencesSpec
    | WordsSpec
    | BulletsSpec
    | CsvSpec
    | CodeSpec
    | ToolCallSpec
    | AllSpec,
    Field(discriminator="kind"),
]
AllSpec.model_rebuild()
