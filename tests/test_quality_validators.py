"""Golden good and bad replies for every validator kind, the sanitizer, and the code sandbox."""

from __future__ import annotations

import typing
from typing import Any, Literal

import pytest
from pydantic import TypeAdapter, ValidationError

from edgebench.quality import (
    FailureClass,
    ModelOutput,
    ToolCallOut,
    ValidatorSpec,
    Verdict,
    looks_like_refusal,
    registered,
    sanitize,
    validate,
)
from edgebench.quality.numbers import convert, pick_answer
from edgebench.quality.toolcall import evaluate_expression
from edgebench.quality.validators import count_sentences

F = FailureClass
SPEC = TypeAdapter(ValidatorSpec)


def spec(data: dict[str, Any]) -> ValidatorSpec:
    return SPEC.validate_python(data)


def out(content: str = "", calls: list[dict[str, Any]] | None = None, **kw: Any) -> ModelOutput:
    return ModelOutput(content=content, tool_calls=[ToolCallOut(**c) for c in calls or []], **kw)


def check(data: dict[str, Any], reply: str | ModelOutput) -> Verdict:
    return validate(reply if isinstance(reply, ModelOutput) else out(reply), spec(data))


# --- specs used below ---------------------------------------------------------------------------

BAT_BALL = {"kind": "numeric", "answer": 0.05, "unit": "dollar", "tolerance": 0.001}
WIDGETS = {"kind": "numeric", "answer": 5, "unit": "minutes"}
SPEED = {"kind": "numeric", "answer": 50, "unit": "mph"}
PLAIN = {"kind": "numeric", "answer": 1234.5}
EXACT = {"kind": "exact", "answer": ["blue"]}
CONTAINS = {"kind": "contains", "any_of": ["Canberra"], "none_of": ["Sydney"]}
ALL_OF = {"kind": "contains", "all_of": ["hypertext", "markup", "language"]}
REGEX = {"kind": "regex", "pattern": "^HELLO[.!]?$", "ignore_case": False, "full": True}
CHOICE = {
    "kind": "choice",
    "options": ["valid", "invalid"],
    "answer": "invalid",
    "aliases": {"invalid": ["not valid"]},
}
USER_SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
}
RAW_JSON = {"kind": "json", "raw": True, "schema": USER_SCHEMA, "values": {"name": "Ada", "age": 36}}
LOOSE_JSON = {"kind": "json", "schema": USER_SCHEMA}
SENTENCES = {"kind": "sentences", "count": 3}
WORDS = {"kind": "words", "max": 10}
BULLETS = {"kind": "bullets", "count": 3, "only": True}
CSV = {"kind": "csv", "header": ["name", "age", "city"], "rows": 2}
RAW_CSV = {"kind": "csv", "header": ["name", "age", "city"], "rows": 2, "raw": True}
CODE = {
    "kind": "code",
    "entry": "is_palindrome",
    "tests": [
        "assert is_palindrome('racecar')",
        "assert not is_palindrome('ab')",
        "assert is_palindrome('')",
    ],
    "timeout_s": 5,
}
LISTCOMP = {
    "kind": "code",
    "entry": "evens",
    "requires": ["ListComp"],
    "tests": ["assert evens([1, 2, 4]) == [2, 4]"],
}
ALL = {"kind": "all", "checks": [{"kind": "words", "max": 12}, {"kind": "contains", "any_of": ["compiler"]}]}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
TIMER = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "description": "Start a timer",
        "parameters": {
            "type": "object",
            "properties": {"minutes": {"type": "integer"}},
            "required": ["minutes"],
        },
    },
}
TOOLS = [WEATHER, SEARCH, TIMER]
ONE_CALL = {
    "kind": "tool_call",
    "tools": TOOLS,
    "calls": [
        {
            "name": "get_weather",
            "arguments": {"city": "Paris"},
            "match": {"city": {"any_of": ["Paris, France"]}},
        }
    ],
}
PARALLEL = {
    "kind": "tool_call",
    "tools": TOOLS,
    "calls": [
        {"name": "get_weather", "arguments": {"city": "Tokyo"}},
        {"name": "get_weather", "arguments": {"city": "Berlin"}},
    ],
}
MIXED = {
    "kind": "tool_call",
    "tools": TOOLS,
    "calls": [
        {"name": "set_timer", "arguments": {"minutes": 10}},
        {
            "name": "web_search",
            "arguments": {"query": "pasta recipe"},
            "match": {"query": {"contains_all": ["pasta"]}},
        },
    ],
}
IRRELEVANT = {"kind": "tool_call", "tools": TOOLS, "expect": "none"}
ASK = {"kind": "tool_call", "tools": TOOLS, "expect": "ask", "function": "get_weather", "missing": ["city"]}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# --- golden replies: (kind, spec, reply) --------------------------------------------------------

GOOD: list[tuple[str, dict[str, Any], str | ModelOutput]] = [
    ("numeric", BAT_BALL, "$0.05"),
    ("numeric", BAT_BALL, "5 cents"),
    ("numeric", BAT_BALL, "0.05 dollars"),
    ("numeric", BAT_BALL, "The ball costs five cents."),
    ("numeric", BAT_BALL, "Let the ball be x; 2x + 1.00 = 1.10 so x = 0.05.\nAnswer: $0.05"),
    ("numeric", BAT_BALL, "The answer is 0.05 dollars, since 1.05 + 0.05 = 1.10"),
    ("numeric", BAT_BALL, "<think>maybe $0.10? no.</think>The ball costs $0.05."),
    ("numeric", WIDGETS, "It would take 5 minutes for 100 machines to make 100 widgets."),
    ("numeric", WIDGETS, "300 seconds"),
    ("numeric", SPEED, "The train's speed is 50 mph."),
    ("numeric", SPEED, "150 miles / 3 hours = 50 miles per hour"),
    ("numeric", PLAIN, "The total comes to 1,234.5"),
    ("numeric", PLAIN, "\\boxed{1234.5}"),
    ("exact", EXACT, "Blue"),
    ("exact", EXACT, "**blue.**"),
    ("exact", EXACT, "Answer: blue"),
    ("contains", CONTAINS, "The capital of Australia is Canberra."),
    ("contains", CONTAINS, "canberra"),
    ("contains", ALL_OF, "HTML stands for HyperText Markup Language."),
    ("regex", REGEX, "HELLO"),
    ("regex", REGEX, "  HELLO!  "),
    ("regex", {"kind": "regex", "pattern": r"^\W*Yes\b", "ignore_case": False}, "Yes, Python is a language."),
    ("choice", CHOICE, "Invalid."),
    ("choice", CHOICE, "The argument is not valid: some flowers that fade need not be roses."),
    (
        "choice",
        CHOICE,
        "Let me check whether this is valid.\nThe middle term is undistributed.\nTherefore, invalid.",
    ),
    ("json", RAW_JSON, '{"name": "Ada", "age": 36}'),
    ("json", RAW_JSON, '  {"age": 36, "name": "ada"}\n'),
    ("json", LOOSE_JSON, '```json\n{"name": "Bo", "age": 4}\n```'),
    ("json", LOOSE_JSON, 'Here it is: {"name": "Bo", "age": 4} as requested.'),
    ("sentences", SENTENCES, "The sea is vast. It is salty! Do fish sleep?"),
    ("sentences", SENTENCES, "Dr. Smith sails at 3.5 knots. The sea is calm. Waves roll in"),
    ("sentences", SENTENCES, "One line here.\nA second sentence.\nA third one."),
    ("words", WORDS, "A compiler turns source code into machine code."),
    ("words", WORDS, "Ten words: one two three four five six seven eight."),
    ("words", {"kind": "words", "min": 2, "max": 3}, "well-known don't"),
    ("bullets", BULLETS, "- sleep\n- water\n- walks"),
    ("bullets", BULLETS, "* a\n* b\n* c"),
    ("bullets", BULLETS, "1. boil water\n2. add egg\n3. wait"),
    ("csv", CSV, "name,age,city\nAna,30,Rome\nBo,25,Oslo"),
    ("csv", CSV, "```csv\nname,age,city\nAna,30,Rome\nBo,25,Oslo\n```"),
    ("csv", CSV, 'Here you go:\nName,Age,City\n"Smith, Ana",30,Rome\nBo,25,Oslo\nHope that helps.'),
    ("csv", RAW_CSV, "name,age,city\nAna,30,Rome\nBo,25,Oslo\n"),
    ("code", CODE, "```python\ndef is_palindrome(s):\n    return s == s[::-1]\n```"),
    ("code", CODE, "def is_palindrome(s):\n    return s == ''.join(reversed(s))"),
    (
        "code",
        CODE,
        "Sure:\n\ndef is_palindrome(s):\n    return s == s[::-1]\n\nIt compares s with its reverse.",
    ),
    ("code", LISTCOMP, "```py\ndef evens(xs):\n    return [x for x in xs if x % 2 == 0]\n```"),
    ("tool_call", ONE_CALL, out(calls=[call("get_weather", city="Paris")])),
    ("tool_call", ONE_CALL, out(calls=[{"name": "get_weather", "arguments": '{"city": "paris, france"}'}])),
    ("tool_call", ONE_CALL, out(calls=[call("get_weather", city="Paris", unit="celsius")])),
    ("tool_call", ONE_CALL, '{"name": "get_weather", "arguments": {"city": "Paris"}}'),
    ("tool_call", ONE_CALL, '```json\n[{"name": "get_weather", "parameters": {"city": "Paris"}}]\n```'),
    (
        "tool_call",
        ONE_CALL,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ),
    ("tool_call", ONE_CALL, '[get_weather(city="Paris")]'),
    (
        "tool_call",
        PARALLEL,
        out(calls=[call("get_weather", city="Berlin"), call("get_weather", city="Tokyo")]),
    ),
    ("tool_call", PARALLEL, 'get_weather(city="Berlin")\nget_weather(city="Tokyo")'),
    (
        "tool_call",
        MIXED,
        out(calls=[call("web_search", query="Quick pasta recipe"), call("set_timer", minutes=10)]),
    ),
    ("tool_call", IRRELEVANT, "Crimson leaves let go / the wind carries them away / autumn exhales"),
    ("tool_call", IRRELEVANT, "I can't write that with a weather tool, but here is a haiku anyway."),
    ("tool_call", ASK, "Which city would you like the weather for?"),
    ("tool_call", ASK, "Please specify the city."),
    ("all", ALL, "A compiler translates source code into machine code."),
    ("all", ALL, "compiler: source in, binary out"),
    ("all", ALL, "The compiler checks and translates programs."),
]

BAD: list[tuple[str, dict[str, Any], str | ModelOutput, FailureClass]] = [
    ("numeric", BAT_BALL, "$0.10", F.WRONG),
    ("numeric", BAT_BALL, "10 cents", F.WRONG),
    ("numeric", BAT_BALL, "The ball costs ten cents.", F.WRONG),
    ("numeric", BAT_BALL, "The ball is cheap.", F.UNPARSEABLE),
    ("numeric", BAT_BALL, "I'm sorry, but I can't help with pricing questions.", F.REFUSED),
    ("numeric", WIDGETS, "It takes 100 minutes.", F.WRONG),
    ("numeric", SPEED, "It goes 45 mph (about 72 km/h).", F.WRONG),
    ("exact", EXACT, "Red", F.WRONG),
    ("exact", EXACT, "The sky is blue on a clear day.", F.UNPARSEABLE),
    ("exact", EXACT, "azure", F.WRONG),
    ("contains", CONTAINS, "Sydney.", F.WRONG),
    ("contains", CONTAINS, "Not Sydney but Canberra.", F.WRONG),
    ("contains", CONTAINS, "It is in the Australian Capital Territory.", F.WRONG),
    ("contains", ALL_OF, "HyperText Markup", F.WRONG),
    ("regex", REGEX, "hello", F.WRONG),
    ("regex", REGEX, "HELLO WORLD", F.WRONG),
    ("regex", REGEX, "Sure! HELLO", F.WRONG),
    ("choice", CHOICE, "Valid.", F.WRONG),
    ("choice", CHOICE, "The argument is valid because both premises are true.", F.WRONG),
    ("choice", CHOICE, "It depends on the premises.", F.UNPARSEABLE),
    ("choice", CHOICE, "As an AI, I cannot judge arguments.", F.REFUSED),
    ("json", RAW_JSON, '```json\n{"name": "Ada", "age": 36}\n```', F.UNPARSEABLE),
    ("json", RAW_JSON, 'Here is the JSON: {"name": "Ada", "age": 36}', F.UNPARSEABLE),
    ("json", RAW_JSON, '{"name": "Ada", "age": "36"}', F.SCHEMA_INVALID),
    ("json", RAW_JSON, '{"name": "Ada"}', F.SCHEMA_INVALID),
    ("json", RAW_JSON, '{"name": "Bob", "age": 36}', F.WRONG),
    ("json", RAW_JSON, "{name: 'Ada', age: 36}", F.UNPARSEABLE),
    ("json", LOOSE_JSON, "[1, 2, 3]", F.SCHEMA_INVALID),
    ("sentences", SENTENCES, "The sea is vast. It is salty.", F.WRONG),
    ("sentences", SENTENCES, "One. Two. Three. Four.", F.WRONG),
    (
        "sentences",
        SENTENCES,
        "Here are three sentences:\nThe sea is vast. It is salty. Fish live there.",
        F.WRONG,
    ),
    (
        "words",
        WORDS,
        "A compiler is a program that translates source code written by people into machine code.",
        F.WRONG,
    ),
    ("words", {"kind": "words", "min": 5}, "Too short.", F.WRONG),
    ("words", {"kind": "words", "count": 2}, "one two three", F.WRONG),
    ("bullets", BULLETS, "- a\n- b", F.WRONG),
    ("bullets", BULLETS, "Here are tips:\n- a\n- b\n- c", F.WRONG),
    ("bullets", BULLETS, "a, b and c", F.WRONG),
    ("csv", CSV, "name,age,city\nAna,30,Rome", F.WRONG),
    ("csv", CSV, "name,age\nAna,30\nBo,25", F.WRONG),
    ("csv", CSV, "| name | age | city |\n|---|---|---|\n| Ana | 30 | Rome |", F.UNPARSEABLE),
    ("csv", CSV, "first,age,city\nAna,30,Rome\nBo,25,Oslo", F.WRONG),
    ("csv", RAW_CSV, "```csv\nname,age,city\nAna,30,Rome\nBo,25,Oslo\n```", F.UNPARSEABLE),
    ("code", CODE, "```python\ndef is_palindrome(s):\n    return True\n```", F.WRONG),
    ("code", CODE, "```python\ndef palindrome(s):\n    return s == s[::-1]\n```", F.WRONG),
    ("code", CODE, "```python\ndef is_palindrome(s) return s\n```", F.UNPARSEABLE),
    ("code", CODE, "Check whether the string equals its reverse.", F.UNPARSEABLE),
    ("code", LISTCOMP, "def evens(xs):\n    return list(filter(lambda x: x % 2 == 0, xs))", F.WRONG),
    ("tool_call", ONE_CALL, out(calls=[call("get_weather", city="London")]), F.WRONG_ARGS),
    ("tool_call", ONE_CALL, out(calls=[call("web_search", query="Paris weather")]), F.WRONG_FUNCTION),
    ("tool_call", ONE_CALL, out(calls=[call("get_forecast", city="Paris")]), F.WRONG_FUNCTION),
    ("tool_call", ONE_CALL, out(calls=[call("get_weather", town="Paris")]), F.SCHEMA_INVALID),
    ("tool_call", ONE_CALL, out(calls=[call("get_weather", city=75)]), F.SCHEMA_INVALID),
    (
        "tool_call",
        ONE_CALL,
        out(calls=[{"name": "get_weather", "arguments": '{"city": "Par'}]),
        F.UNPARSEABLE,
    ),
    ("tool_call", ONE_CALL, '{"name": "get_weather", "arguments": {"city": "Par', F.UNPARSEABLE),
    ("tool_call", ONE_CALL, "It is sunny in Paris today.", F.NO_CALL),
    (
        "tool_call",
        ONE_CALL,
        "I cannot execute any tool to call get_weather. I only provide information.",
        F.REFUSED,
    ),
    ("tool_call", PARALLEL, out(calls=[call("get_weather", city="Tokyo")]), F.WRONG_FUNCTION),
    (
        "tool_call",
        PARALLEL,
        out(calls=[call("get_weather", city="Tokyo"), call("get_weather", city="Rome")]),
        F.WRONG_ARGS,
    ),
    (
        "tool_call",
        MIXED,
        out(calls=[call("set_timer", minutes=15), call("web_search", query="pasta")]),
        F.WRONG_ARGS,
    ),
    ("tool_call", IRRELEVANT, out(calls=[call("web_search", query="autumn haiku")]), F.WRONG_FUNCTION),
    ("tool_call", IRRELEVANT, '{"name": "get_weather", "arguments": {"city": "Kyoto"}}', F.WRONG_FUNCTION),
    ("tool_call", IRRELEVANT, '{"name": "get_weather", "arguments": {"city": ', F.WRONG_FUNCTION),
    ("tool_call", ASK, out(calls=[call("get_weather", city="New York")]), F.WRONG_ARGS),
    ("tool_call", ASK, '[get_weather(city="London")]', F.WRONG_ARGS),
    ("tool_call", ASK, out(calls=[call("web_search", query="weather")]), F.WRONG_FUNCTION),
    ("tool_call", ASK, "It is sunny and 22 degrees.", F.WRONG),
    (
        "all",
        ALL,
        "A compiler is a program that turns the source code of programs into machine code.",
        F.WRONG,
    ),
    ("all", ALL, "An interpreter runs code.", F.WRONG),
    ("all", ALL, "", F.EMPTY),
]


def _id(case: tuple[Any, ...]) -> str:
    reply = case[2]
    text = (
        reply.content or str([c.name for c in reply.tool_calls]) if isinstance(reply, ModelOutput) else reply
    )
    return f"{case[0]}:{text[:40]}"


@pytest.mark.parametrize("case", GOOD, ids=[_id(c) for c in GOOD])
def test_golden_good(case: tuple[str, dict[str, Any], str | ModelOutput]) -> None:
    kind, data, reply = case
    assert data["kind"] == kind
    verdict = check(data, reply)
    assert verdict.passed, verdict
    assert verdict.failure is F.CORRECT


@pytest.mark.parametrize("case", BAD, ids=[_id(c) for c in BAD])
def test_golden_bad(case: tuple[str, dict[str, Any], str | ModelOutput, FailureClass]) -> None:
    kind, data, reply, expected = case
    assert data["kind"] == kind
    verdict = check(data, reply)
    assert not verdict.passed
    assert verdict.failure is expected, verdict


def _kinds() -> set[str]:
    union = typing.get_args(typing.get_args(ValidatorSpec)[0])
    return {typing.get_args(m.model_fields["kind"].annotation)[0] for m in union}


def test_every_kind_has_a_validator_and_three_golden_cases_each_way() -> None:
    assert set(registered()) == _kinds()
    for kind in _kinds():
        assert sum(1 for c in GOOD if c[0] == kind) >= 3, kind
        assert sum(1 for c in BAD if c[0] == kind) >= 3, kind


SAMPLES: dict[str, dict[str, Any]] = {
    "numeric": BAT_BALL,
    "exact": EXACT,
    "contains": CONTAINS,
    "regex": REGEX,
    "choice": CHOICE,
    "json": RAW_JSON,
    "sentences": SENTENCES,
    "words": WORDS,
    "bullets": BULLETS,
    "csv": CSV,
    "code": CODE,
    "tool_call": ONE_CALL,
    "all": ALL,
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_validator_classifies_empty_timeout_and_missing_template(kind: str) -> None:
    data = SAMPLES[kind]
    assert check(data, "").failure is F.EMPTY
    assert check(data, "<think>still thinking about it").failure is F.EMPTY
    assert check(data, out("", error="HTTP 500")).detail == "request failed: HTTP 500"
    assert check(data, out("partial", timed_out=True)).failure is F.TIMEOUT
    assert check(data, out("whatever", template_missing=True)).failure is F.TEMPLATE_MISSING


def test_samples_cover_every_kind() -> None:
    assert set(SAMPLES) == _kinds()


def test_tool_calls_where_an_answer_was_wanted_are_a_wrong_function() -> None:
    verdict = check(BAT_BALL, out(calls=[call("calculator", expression="1.10 - 1.00")]))
    assert verdict.failure is F.WRONG_FUNCTION


def test_truncated_reply_says_so() -> None:
    verdict = check(BAT_BALL, out("Let me think step by step. The bat costs", finish_reason="length"))
    assert verdict.failure is F.UNPARSEABLE
    assert "max_tokens" in verdict.detail


def test_pathological_nesting_is_unparseable_not_a_crash() -> None:
    assert check(LOOSE_JSON, "[" * 100_000).failure is F.UNPARSEABLE


def test_model_output_ignores_backend_only_fields() -> None:
    response = {
        "content": "5 cents",
        "wall_s": 1.5,
        "timings": {"predicted_per_second": 9.0},
        "tool_calls": [],
    }
    assert validate(ModelOutput.model_validate(response), spec(BAT_BALL)).passed


def test_verdict_cannot_contradict_itself() -> None:
    with pytest.raises(ValidationError):
        Verdict(passed=True, failure=F.WRONG)
    with pytest.raises(ValidationError):
        Verdict(passed=False, failure=F.CORRECT)


# --- numbers, refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "value"),
    [
        ("x = 0.05, so the ball costs 5 cents", "dollar", 0.05),
        ("Final answer: 7. (I first guessed 12.)", None, 7.0),
        ("Read pages 10-12", None, 12.0),
        ("It was -3 degrees", None, -3.0),
        ("Sally has 3 brothers; each one has two sisters, so Sally has one sister.", None, 1.0),
        ("It took 100 machines 5 minutes to make 100 widgets", "minutes", 5.0),
        ("twenty-five", None, 25.0),
    ],
)
def test_pick_answer(text: str, unit: str | None, value: float) -> None:
    q = pick_answer(text, unit)
    assert q is not None
    assert convert(q, unit) == pytest.approx(value)


def test_refusal_needs_to_come_early() -> None:
    assert looks_like_refusal("As an AI language model, I cannot browse.")
    assert looks_like_refusal("I can’t help with that request.")
    long_answer = "The ocean is large. " * 20 + "I can't help loving it."
    assert not looks_like_refusal(long_answer)
    assert not looks_like_refusal("I can see three sentences here.")


# --- sanitizer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text", "label"),
    [
        ("<think>Let me see… 0.10?</think>\nThe ball costs $0.05.", "The ball costs $0.05.", "think"),
        ("so x is small</think>The ball costs $0.05.", "The ball costs $0.05.", "think"),
        ("<think>The bat costs one dollar more, so", "", "think_unclosed"),
        ("[THINK]Maybe 10 cents? No.[/THINK]The ball costs $0.05.", "The ball costs $0.05.", "think"),
        ("so 5 cents.[/THINK]\n5 cents", "5 cents", "think"),
        ("[THINK]The bat costs one dollar more, so", "", "think_unclosed"),
        ("<|channel>thought\nuser wants a number<channel|>Canberra", "Canberra", "gemma_channel"),
        ("<start_of_turn>model\nCanberra<end_of_turn>", "Canberra", "role_header"),
        ("Canberra<end_of_turn>\n<start_of_turn>user\nAnd Canada?", "Canberra", "after_end_of_turn"),
        ("<|im_start|>assistant\nCanberra<|im_end|>", "Canberra", "token:<|im_end|>"),
        ("Canberra<|eot_id|>", "Canberra", "token:<|eot_id|>"),
        ("Canberra</s>", "Canberra", "token:</s>"),
        ("Canberra<eos>", "Canberra", "token:<eos>"),
        ("Canberra<|end|>", "Canberra", "token:<|end|>"),
        (
            "<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>Canberra",
            "Canberra",
            "harmony_channel",
        ),
    ],
)
def test_sanitize_strips(raw: str, text: str, label: str) -> None:
    result = sanitize(raw)
    assert result.text == text
    assert label in result.stripped


def test_sanitize_leaves_plain_answers_alone() -> None:
    for plain in ["Canberra", "Use a <b>tag</b> and x < y > z.", "def f():\n    return 1"]:
        result = sanitize(plain)
        assert result.text == plain.strip()
        assert result.stripped == []


def test_sanitize_uses_reasoning_content() -> None:
    echoed = sanitize(
        "The user asks for a capital.\nCanberra", reasoning_content="The user asks for a capital."
    )
    assert echoed.text == "Canberra"
    assert "reasoning_echo" in echoed.stripped
    only = sanitize("", reasoning_content="Thinking about capitals…")
    assert only.text == ""
    assert "reasoning_only" in only.stripped


# The code sandbox (isolation, escapes, limits, how hidden tests are checked): tests/test_sandbox.py


# --- answer extraction, tool arguments by meaning -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1234 * 5678", 7006652.0),
        ("5678×1234", 7006652.0),
        ("43 x 37", 1591.0),
        ("(2 + 3) ^ 2", 25.0),
        ("1,000 * 0.05 * 3", 150.0),
        ("7006652", None),  # a claimed result is not an expression
        ("__import__('os').system('true') or 1*1", None),  # never evaluated, only walked
        ("2 ** 10000", None),  # refused, not computed
        ("1 / 0", None),
    ],
)
def test_evaluate_expression(text: str, value: float | None) -> None:
    assert evaluate_expression(text) == value


CALC = {
    "kind": "tool_call",
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "parameters": {
                    "type": "object",
                    "properties": {"expression": {"type": "string"}},
                    "required": ["expression"],
                },
            },
        }
    ],
    "calls": [
        {
            "name": "calculator",
            "arguments": {"expression": "37 * 43"},
            "match": {"expression": {"expression": True}},
        }
    ],
}


def test_expression_arguments_compare_by_value() -> None:
    assert check(CALC, out(calls=[call("calculator", expression="43*37")])).passed
    wrong = check(CALC, out(calls=[call("calculator", expression="370 * 43")]))
    assert wrong.failure is F.WRONG_ARGS


def test_integer_arguments_are_strict_like_bfcl() -> None:
    timer = {
        "kind": "tool_call",
        "tools": TOOLS,
        "calls": [{"name": "set_timer", "arguments": {"minutes": 10}}],
    }
    assert check(timer, out(calls=[call("set_timer", minutes=10)])).passed
    assert check(timer, out(calls=[call("set_timer", minutes=10.0)])).failure is F.SCHEMA_INVALID
    assert check(timer, out(calls=[call("set_timer", minutes="10")])).failure is F.SCHEMA_INVALID


def test_two_fenced_calls_are_both_read() -> None:
    fenced = '```json\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n```\n'
    fenced += '```json\n{"name": "get_weather", "arguments": {"city": "Berlin"}}\n```'
    assert check(PARALLEL, fenced).passed


@pytest.mark.parametrize(
    ("reply", "passed"),
    [
        ("I'll need your city.", True),
        ("Email sent! Is there anything else?", False),
        ("Is there anything else I can help you with?", False),
        ("I'll assume London. Or tell me your city?", False),
    ],
)
def test_must_ask_names_the_missing_argument(reply: str, passed: bool) -> None:
    assert check(ASK, reply).passed is passed


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("The U.S. is large. It has two coasts.", 2),
        ("Use tools, e.g. a hammer. Dr. Smith agrees.", 2),
        ("It is 3.5 m long. Really!", 2),
        ("It went on... and on. The end.", 2),
    ],
)
def test_count_sentences_keeps_abbreviations_and_decimals(text: str, n: int) -> None:
    assert count_sentences(text) == n


def test_hedges_lists_and_negations() -> None:
    capital = {"kind": "contains", "any_of": ["Canberra"], "distractors": ["Sydney"], "cues": ["capital"]}
    assert check(capital, "Canberra, not Sydney.").passed
    assert not check(capital, "Canberra or Sydney.").passed
    assert not check(capital, "Sydney is the capital; Canberra is just where parliament sits.").passed
    assert check(CONTAINS, "Canberra, not Sydney.").failure is F.WRONG  # none_of: not even negated
    assert check(CHOICE, "It is not valid.").passed
    assert check(CHOICE, "The argument isn't valid.").passed  # the other of two options
    assert not check(CHOICE, "Valid or invalid, depending on context.").passed
    assert check(BAT_BALL, "The ball costs 5 cents. (A common mistake is to say 10 cents.)").passed
    assert not check(BAT_BALL, "The ball costs 10 cents. (A common mistake is to say 5 cents.)").passed
    assert not check(BAT_BALL, "5 cents or maybe 10 cents.").passed


def test_validators_are_defined_once_by_their_spec_type() -> None:
    # The spec's `kind` Literal is the only spelling of the name: registering by a string that no
    # spec declares, or a spec left without a check, is caught at import (validators._check_complete).
    from pydantic import BaseModel

    from edgebench.quality import validators
    from edgebench.quality.specs import NumericSpec

    assert validators._kind(NumericSpec) == "numeric"
    assert set(validators.registered()) >= {"numeric", "tool_call", "code", "all"}
    with pytest.raises(ValueError, match="registered twice"):
        validators.register(NumericSpec)(lambda out, spec: None)  # type: ignore[arg-type,return-value]

    class _Orphan(BaseModel):
        kind: Literal["orphan"] = "orphan"

    validators.register(_Orphan)(lambda out, spec: None)  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(RuntimeError, match="orphan"):
            validators._check_complete()
    finally:
        validators._REGISTRY.pop("orphan")
