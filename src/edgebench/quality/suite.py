"""Quality suites: YAML files of items (prompt, paraphrased variants, validator spec, weight).

Built-in suites ship in `edgebench/quality/suites/<name>.yaml`; `--suite-dir` adds user dirs,
searched first. A suite file may define shared tools once under `tools:` (name → function) and
let items list them by name; `prompt:` and string variants are shorthand for one user message.
Any problem is a one-line `ConfigError` naming the file, the item and the cause.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgebench.errors import ConfigError
from edgebench.quality.specs import ToolCallSpec, ValidatorSpec, tool_parameters

__all__ = [
    "BUILTIN_DIR",
    "CATEGORIES",
    "CATEGORY_WEIGHTS",
    "Category",
    "Item",
    "Message",
    "Suite",
    "SuiteSummary",
    "list_suites",
    "load_suite",
]

Category = Literal["reasoning", "factual", "code", "instruction", "tool_call", "math"]
CATEGORIES: tuple[Category, ...] = ("reasoning", "factual", "code", "instruction", "tool_call", "math")
# Seed 001 weighs reasoning ×3.0, tool calling ×2.5 and math ×1.0 "because they reflect real agent
# workloads"; it names no others, so code, instruction and factual sit in between.
CATEGORY_WEIGHTS: dict[Category, float] = {
    "reasoning": 3.0,
    "tool_call": 2.5,
    "code": 2.0,
    "instruction": 1.5,
    "factual": 1.5,
    "math": 1.0,
}
BUILTIN_DIR = Path(__file__).parent / "suites"
_SUFFIXES = (".yaml", ".yml")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(_Frozen):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(min_length=1)


def _conversation(value: Any) -> Any:
    """A bare string is one user message."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


class Item(_Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    category: Category
    weight: float = Field(gt=0)
    messages: list[Message] = Field(min_length=1)
    variants: list[list[Message]] = []  # paraphrases of `messages`, scored by the same validator
    tools: list[dict[str, Any]] | None = None  # OpenAI `tools` (type: function), sent as-is
    validator: ValidatorSpec
    max_tokens: int | None = Field(default=None, gt=0)
    tool_mode_hint: Literal["native", "prompt"] | None = None  # how the runner should offer tools
    reference: str | None = None  # a known-good reply; tests check it passes the validator

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "prompt" in data:
            if "messages" in data:
                raise ValueError("give prompt or messages, not both")
            data["messages"] = _conversation(data.pop("prompt"))
        if isinstance(data.get("variants"), list):
            data["variants"] = [_conversation(v) for v in data["variants"]]
        validator = data.get("validator")
        if isinstance(validator, dict) and validator.get("kind") == "tool_call" and "tools" not in validator:
            data["validator"] = {**validator, "tools": data.get("tools") or []}
        return data

    @field_validator("messages", "variants")
    @classmethod
    def _ends_with_user(cls, v: list[Any]) -> list[Any]:
        conversations = v if v and isinstance(v[0], list) else [v] if v else []
        for conversation in conversations:
            if not conversation or conversation[-1].role != "user":
                raise ValueError("a conversation must end with a user message")
        return v

    @field_validator("tools")
    @classmethod
    def _tools_well_formed(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v is not None:
            tool_parameters(v)
        return v

    @model_validator(mode="after")
    def _tools_match_validator(self) -> Item:
        if isinstance(self.validator, ToolCallSpec):
            if not self.tools:
                raise ValueError("a tool_call item needs tools")
            if self.category != "tool_call":
                raise ValueError("a tool_call validator belongs in the tool_call category")
        return self

    def prompts(self) -> list[list[Message]]:
        """The original conversation, then its variants: index 0 is the canonical prompt."""
        return [self.messages, *self.variants]


class Suite(_Frozen):
    name: str
    description: str = ""
    items: list[Item] = Field(min_length=1)
    source: str = ""  # the file it came from
    digest: str = ""  # sha256 of that file: results record which suite text they measured

    def by_category(self) -> dict[str, list[Item]]:
        out: dict[str, list[Item]] = {}
        for item in self.items:
            out.setdefault(item.category, []).append(item)
        return out


class SuiteSummary(_Frozen):
    name: str
    items: int
    variants: int  # paraphrases, over all items
    categories: dict[str, int]  # item count per category, in canonical order, present ones only

    @classmethod
    def of(cls, suite: Suite) -> SuiteSummary:
        counts = Counter(item.category for item in suite.items)
        return cls(
            name=suite.name,
            items=len(suite.items),
            variants=sum(len(item.variants) for item in suite.items),
            categories={c: counts[c] for c in CATEGORIES if counts[c]},
        )


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]
    """safe_load, but a key given twice is an error instead of silently keeping the last one."""


def _unique_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _problem(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return _one_line(f"{loc}: {msg}" if loc else msg)


def _resolve_tools(raw_tools: Any, library: dict[str, Any]) -> Any:
    if not isinstance(raw_tools, list):
        return raw_tools
    out = []
    for tool in raw_tools:
        if isinstance(tool, str):
            if tool not in library:
                raise ValueError(f"tools: {tool!r} is not defined under the suite's tools")
            out.append({"type": "function", "function": {"name": tool, **library[tool]}})
        else:
            out.append(tool)
    return out


def parse_suite(text: str, source: str, default_name: str) -> Suite:
    """Build a Suite from YAML text; `source` names the file in errors."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(
            f"{source}: not valid YAML: {where}{_one_line(getattr(e, 'problem', None) or e)}"
        ) from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with name and items")
    if unknown := sorted(set(raw) - {"name", "description", "tools", "items"}):
        raise ConfigError(f"{source}: unknown top-level keys {unknown}")
    library = raw.get("tools") or {}
    if not isinstance(library, dict) or not all(isinstance(v, dict) for v in library.values()):
        raise ConfigError(f"{source}: tools must map a tool name to its description and parameters")
    raw_items = raw.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise ConfigError(f"{source}: items must be a non-empty list")
    items: list[Item] = []
    seen: set[str] = set()
    for index, raw_item in enumerate(raw_items):
        item_id = raw_item.get("id") if isinstance(raw_item, dict) else None
        label = f"item {item_id!r}" if item_id else f"item #{index + 1}"
        if not isinstance(raw_item, dict):
            raise ConfigError(f"{source}: {label}: expected a mapping")
        if item_id in seen:
            raise ConfigError(f"{source}: {label}: duplicate id")
        data = dict(raw_item)
        category: Any = data.get("category")
        data.setdefault("weight", CATEGORY_WEIGHTS.get(category, 1.0))
        try:
            data["tools"] = _resolve_tools(data.get("tools"), library)
            items.append(Item.model_validate(data))
        except ValidationError as e:
            raise ConfigError(f"{source}: {label}: {_problem(e)}") from None
        except ValueError as e:
            raise ConfigError(f"{source}: {label}: {_one_line(str(e))}") from None
        seen.add(str(item_id))
    name = raw.get("name", default_name)
    if name != default_name:  # a suite is found by its file name, so the two must agree
        raise ConfigError(f"{source}: name {name!r} differs from the file name {default_name!r}")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return Suite(
        name=name, description=str(raw.get("description", "")), items=items, source=source, digest=digest
    )


def _read(path: Path) -> Suite:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    return parse_suite(text, str(path), path.stem)


def _search_dirs(suite_dirs: Sequence[Path]) -> list[Path]:
    dirs = [Path(d).expanduser() for d in suite_dirs]
    if missing := [d for d in dirs if not d.is_dir()]:
        raise ConfigError(f"suite dir {missing[0]}: not a directory")
    return [*dirs, BUILTIN_DIR]


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def load_suite(name_or_path: str | Path, suite_dirs: Sequence[Path] = ()) -> Suite:
    """A suite by name (user dirs first, then built-in) or by path to a YAML file."""
    path = Path(name_or_path).expanduser()
    # Only a .yaml name or a path with a separator is a file: a stray ./core must not shadow `core`.
    if path.suffix in _SUFFIXES or "/" in str(name_or_path):
        if not path.is_file():
            raise ConfigError(f"suite {str(name_or_path)!r}: no such file")
        return _read(path)
    for directory in _search_dirs(suite_dirs):
        for candidate in _files(directory):
            if candidate.stem == str(name_or_path):
                return _read(candidate)
    known = sorted({p.stem for d in _search_dirs(suite_dirs) for p in _files(d)})
    raise ConfigError(f"suite {str(name_or_path)!r}: not found (available: {', '.join(known) or 'none'})")


def list_suites(suite_dirs: Sequence[Path] = ()) -> list[SuiteSummary]:
    """Every suite reachable by name; a user suite hides a built-in one of the same name."""
    seen: dict[str, SuiteSummary] = {}
    for directory in _search_dirs(suite_dirs):
        for path in _files(directory):
            if path.stem not in seen:
                seen[path.stem] = SuiteSummary.of(_read(path))
    return [seen[name] for name in sorted(seen)]
