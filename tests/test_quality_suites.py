"""The shipped suites: they load, have the required layout, and every item's golden answer passes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from pydantic import TypeAdapter

from edgebench.errors import ConfigError
from edgebench.quality import (
    CATEGORIES,
    CATEGORY_WEIGHTS,
    Item,
    ModelOutput,
    ToolCallOut,
    ValidatorSpec,
    list_suites,
    load_suite,
    validate,
)
from edgebench.quality.specs import ToolCallSpec, tool_parameters
from edgebench.quality.suite import BUILTIN_DIR

SHIPPED = ["core", "seed14"]
SEED14_LAYOUT = {"reasoning": 3, "factual": 3, "code": 2, "instruction": 3, "tool_call": 2, "math": 1}


def _items(name: str) -> list[Item]:
    return load_suite(name).items


ALL_ITEMS = [(name, item) for name in SHIPPED for item in _items(name)]
ITEM_IDS = [f"{name}:{item.id}" for name, item in ALL_ITEMS]


def test_builtin_suites_are_listed_with_the_documented_shape() -> None:
    summaries = {s.name: s.model_dump() for s in list_suites()}
    assert sorted(summaries) == SHIPPED
    seed = summaries["seed14"]
    assert set(seed) == {"name", "items", "variants", "categories"}
    assert seed["items"] == 14
    assert seed["categories"] == SEED14_LAYOUT
    assert seed["variants"] == sum(len(i.variants) for i in _items("seed14"))


def test_seed14_has_the_seed_layout() -> None:
    counts = Counter(item.category for item in _items("seed14"))
    assert counts == Counter(SEED14_LAYOUT)


def test_core_size_and_balance() -> None:
    items = _items("core")
    counts = Counter(item.category for item in items)
    assert len(items) >= 60
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 8, counts


@pytest.mark.parametrize(("name", "item"), ALL_ITEMS, ids=ITEM_IDS)
def test_every_item_has_two_or_three_distinct_variants(name: str, item: Item) -> None:
    assert 2 <= len(item.variants) <= 3
    texts = [" ".join(m.content for m in conversation) for conversation in item.prompts()]
    assert len(set(texts)) == len(texts), "a variant repeats the prompt or another variant"


@pytest.mark.parametrize(("name", "item"), ALL_ITEMS, ids=ITEM_IDS)
def test_every_validator_spec_round_trips(name: str, item: Item) -> None:
    adapter = TypeAdapter(ValidatorSpec)
    dumped = adapter.dump_python(item.validator, by_alias=True, mode="json")
    assert adapter.validate_python(dumped) == item.validator


@pytest.mark.parametrize(("name", "item"), ALL_ITEMS, ids=ITEM_IDS)
def test_every_item_has_a_golden_answer_that_passes(name: str, item: Item) -> None:
    spec = item.validator
    if isinstance(spec, ToolCallSpec) and spec.expect == "call":
        calls = [ToolCallOut(name=c.name, arguments=c.arguments) for c in spec.calls]
        native = validate(ModelOutput(tool_calls=calls), spec)
        as_text = [{"name": c.name, "arguments": c.arguments} for c in spec.calls]
        prompt_mode = validate(ModelOutput(content=json.dumps(as_text)), spec)
        assert native.passed, native
        assert prompt_mode.passed, prompt_mode
        reversed_order = validate(ModelOutput(tool_calls=calls[::-1]), spec)
        assert reversed_order.passed, reversed_order
    else:
        assert item.reference, "non-call items need a reference answer"
        verdict = validate(ModelOutput(content=item.reference), spec)
        assert verdict.passed, verdict


@pytest.mark.parametrize(("name", "item"), ALL_ITEMS, ids=ITEM_IDS)
def test_items_fail_an_empty_or_evasive_reply(name: str, item: Item) -> None:
    """A validator that passes anything is broken; "I don't know." must fail every non-irrelevance item."""
    spec = item.validator
    verdict = validate(ModelOutput(content="I don't know."), spec)
    if isinstance(spec, ToolCallSpec) and spec.expect == "none":
        assert verdict.passed
    else:
        assert not verdict.passed, verdict


TOOL_ITEMS = [(n, i) for n, i in ALL_ITEMS if isinstance(i.validator, ToolCallSpec)]


@pytest.mark.parametrize(("name", "item"), TOOL_ITEMS, ids=[f"{n}:{i.id}" for n, i in TOOL_ITEMS])
def test_expected_calls_fit_their_own_tool_schema(name: str, item: Item) -> None:
    assert item.tools
    spec = item.validator
    assert isinstance(spec, ToolCallSpec)
    params = tool_parameters(item.tools)
    for expected in spec.calls:
        jsonschema.Draft202012Validator(params[expected.name]).validate(expected.arguments)
        assert set(expected.arguments) <= set(params[expected.name]["properties"])
    if spec.expect == "ask":
        assert spec.function in params
        assert set(spec.missing) <= set(params[spec.function]["required"])


def test_core_covers_the_bfcl_kinds() -> None:
    kinds: Counter[str] = Counter()
    for item in _items("core"):
        spec = item.validator
        if not isinstance(spec, ToolCallSpec):
            continue
        tools = len(item.tools or [])
        if spec.expect != "call":
            kinds[spec.expect] += 1
        elif len(spec.calls) > 1:
            kinds["parallel"] += 1
        elif tools == 1:
            kinds["simple"] += 1
        elif 3 <= tools <= 5:
            kinds["multiple"] += 1
    for kind in ["simple", "multiple", "parallel", "ask", "none"]:
        assert kinds[kind] >= 2, kinds


def test_weights_default_to_the_category_weight() -> None:
    for item in _items("core"):
        assert item.weight == CATEGORY_WEIGHTS[item.category]
    assert CATEGORY_WEIGHTS["reasoning"] == 3.0
    assert CATEGORY_WEIGHTS["tool_call"] == 2.5
    assert CATEGORY_WEIGHTS["math"] == 1.0


def test_suite_records_its_source_and_digest() -> None:
    suite = load_suite("seed14")
    assert suite.source == str(BUILTIN_DIR / "seed14.yaml")
    assert len(suite.digest) == 64


# --- user suites and errors ----------------------------------------------------------------------

MINIMAL = """\
name: {name}
items:
  - id: one
    category: math
    prompt: What is 2 + 2?
    variants: [Add 2 and 2., "What do 2 and 2 make?"]
    validator: {{kind: numeric, answer: 4}}
"""


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_suites_by_name_and_by_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "suites", "mine", MINIMAL.format(name="mine"))
    by_name = load_suite("mine", [tmp_path / "suites"])
    by_path = load_suite(str(path))
    assert by_name == by_path
    assert by_name.items[0].weight == 1.0
    names = [s.name for s in list_suites([tmp_path / "suites"])]
    assert names == ["core", "mine", "seed14"]


def test_a_user_suite_shadows_a_builtin_one(tmp_path: Path) -> None:
    _write(tmp_path, "core", MINIMAL.format(name="core"))
    assert len(load_suite("core", [tmp_path]).items) == 1
    core = next(s for s in list_suites([tmp_path]) if s.name == "core")
    assert core.items == 1


def test_a_file_in_the_cwd_does_not_shadow_a_suite_name(tmp_path: Path) -> None:
    (tmp_path / "core").write_bytes(b"\x7fELF core dump")  # the autouse fixture chdirs to tmp_path
    assert len(load_suite("core").items) >= 60


def test_a_missing_suite_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        list_suites([tmp_path / "nope"])


def test_unknown_suite_lists_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"suite 'nope': not found \(available: core, seed14\)"):
        load_suite("nope")


def _item(body: str) -> str:
    return "name: bad\nitems:\n" + body


BROKEN = [
    ("not: [valid", "not valid YAML"),
    ("- just a list", "expected a mapping"),
    (
        "name: other\nitems:\n  - {id: a, category: math, prompt: hi, validator: {kind: exact, answer: x}}",
        "differs",
    ),
    (
        _item("  - {id: a, category: poetry, prompt: hi, validator: {kind: exact, answer: x}}"),
        "item 'a': category",
    ),
    (_item("  - {id: a, category: math, prompt: hi, validator: {kind: magic}}"), "item 'a': validator"),
    (_item("  - {id: a, category: math, prompt: hi, validator: {kind: regex, pattern: '('}}"), "bad regex"),
    (
        _item("  - {id: a, category: math, prompt: hi, colour: red, validator: {kind: exact, answer: x}}"),
        "colour",
    ),
    (
        _item(
            "  - {id: a, category: math, prompt: hi, validator: {kind: numeric, answer: 1, unit: furlong}}"
        ),
        "unit",
    ),
    (
        _item("  - {id: a, category: code, prompt: hi, validator: {kind: code, tests: ['assert (']}}"),
        "does not compile",
    ),
    (
        _item(
            "  - {id: a, category: math, prompt: hi, validator: {kind: exact, answer: x}}\n"
            "  - {id: a, category: math, prompt: hi, validator: {kind: exact, answer: x}}"
        ),
        "item 'a': duplicate id",
    ),
    (_item("  - id: a\n    id: b\n    category: math\n    prompt: hi\n"), "duplicate key 'id'"),
    (
        _item(
            "  - id: a\n    category: math\n    prompt: hi\n    variants: [[{role: assistant, content: x}]]\n"
            "    validator: {kind: exact, answer: x}"
        ),
        "end with a user message",
    ),
    (
        _item("  - {id: t, category: tool_call, tools: [nope], prompt: hi, validator: {kind: tool_call}}"),
        "item 't': tools: 'nope' is not defined",
    ),
    (
        "name: bad\ntools:\n  f:\n    parameters: {type: object, properties: {n: {type: integer}}}\n"
        "items:\n  - id: t\n    category: tool_call\n    tools: [f]\n    prompt: hi\n"
        "    validator: {kind: tool_call, calls: [{name: f, arguments: {n: seven}}]}",
        "expected call f breaks its schema: 'seven' is not of type 'integer'",
    ),
    (
        "name: bad\ntools:\n  f:\n    parameters: {type: object, properties: {n: {type: integer}}}\n"
        "items:\n  - id: t\n    category: tool_call\n    tools: [f]\n    prompt: hi\n"
        "    validator: {kind: tool_call, expect: ask, function: f, missing: [n]}",
        "not required by f",
    ),
    (
        _item("  - {id: t, category: math, prompt: hi, validator: {kind: tool_call, expect: none}}"),
        "needs tools",
    ),
]


@pytest.mark.parametrize(("text", "problem"), BROKEN, ids=[p for _, p in BROKEN])
def test_malformed_suites_give_one_line_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = _write(tmp_path, "bad", text)
    with pytest.raises(ConfigError) as excinfo:
        load_suite(str(path))
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message
    with pytest.raises(ConfigError):
        list_suites([tmp_path])
