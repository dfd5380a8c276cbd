"""BFCL-style tool-call checking: read the calls (native `tool_calls` or written into the content),
then check name, schema and values, matching parallel calls in any order.

Prompt-mode replies are read in the shapes small models actually write: `{"name", "arguments"}`
objects or lists (raw, in ```json fences or `<tool_call>` tags, OpenAI-style `{"function": …}`),
and Python-style `[get_weather(city="Paris")]` (BFCL's and Gemma's prompt format).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
from collections import Counter
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict

from edgebench.quality.records import FailureClass, ModelOutput, Verdict
from edgebench.quality.specs import ArgRule, ExpectedCall, ToolCallSpec, tool_parameters

__all__ = ["ParsedCall", "asks_question", "check_tool_call", "evaluate_expression", "extract_calls"]

F = FailureClass


class ParsedCall(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] | None  # None when they could not be read
    problem: str = ""


_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_FENCE = re.compile(r"```[ \t]*([\w-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_JSON_START = re.compile(r"[{\[]")
_LOOKS_LIKE_CALL = re.compile(r"<tool_call>|\"name\"\s*:[^{}]*\"(?:arguments|parameters)\"\s*:", re.S)


def _call_from_dict(obj: dict[str, Any], params: dict[str, dict[str, Any]]) -> list[ParsedCall] | None:
    if isinstance(obj.get("tool_calls"), list):
        return _calls_from_json(obj["tool_calls"], params)
    if isinstance(obj.get("function"), dict) and "name" in obj["function"]:
        return _call_from_dict(obj["function"], params)
    name = obj.get("name")
    if isinstance(name, str):
        for key in ("arguments", "parameters", "args", "input"):
            if key in obj:
                return [_with_arguments(name, obj[key])]
        return [ParsedCall(name=name, arguments={})] if name in params else None
    if len(obj) == 1:  # {"get_weather": {"city": "Paris"}}
        ((key, value),) = obj.items()
        if key in params and isinstance(value, dict):
            return [ParsedCall(name=key, arguments=value)]
    return None


def _with_arguments(name: str, args: Any) -> ParsedCall:
    if isinstance(args, str):  # arguments double-encoded as a JSON string, as the OpenAI API sends them
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            return ParsedCall(name=name, arguments=None, problem=f"arguments are not JSON: {e.msg}")
    if not isinstance(args, dict):
        return ParsedCall(name=name, arguments=None, problem=f"arguments are a {type(args).__name__}")
    return ParsedCall(name=name, arguments=args)


def _calls_from_json(obj: Any, params: dict[str, dict[str, Any]]) -> list[ParsedCall] | None:
    if isinstance(obj, dict):
        return _call_from_dict(obj, params)
    if isinstance(obj, list) and obj:
        calls: list[ParsedCall] = []
        for element in obj:
            found = _call_from_dict(element, params) if isinstance(element, dict) else None
            if found is None:
                return None
            calls.extend(found)
        return calls
    return None


def _python_calls(src: str, params: dict[str, dict[str, Any]]) -> list[ParsedCall] | None:
    """`f(a=1)`, `[f(a=1), g(b=2)]` or one call per line, naming only known tools."""
    try:
        tree = ast.parse(src.strip())
    except (SyntaxError, ValueError):
        return None
    nodes: list[ast.expr] = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            return None
        value = stmt.value
        nodes.extend(value.elts if isinstance(value, ast.List | ast.Tuple) else [value])
    calls: list[ParsedCall] = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name not in params:
            return None
        calls.append(_python_arguments(name, node, list(params[name].get("properties", {}))))
    return calls or None


def _python_arguments(name: str, node: ast.Call, order: list[str]) -> ParsedCall:
    args: dict[str, Any] = {}
    try:
        for i, positional in enumerate(node.args):
            if i >= len(order):
                return ParsedCall(name=name, arguments=None, problem="too many positional arguments")
            args[order[i]] = ast.literal_eval(positional)
        for kw in node.keywords:
            if kw.arg is None:
                return ParsedCall(name=name, arguments=None, problem="**kwargs in a call")
            args[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, TypeError, SyntaxError):
        return ParsedCall(name=name, arguments=None, problem="an argument is not a literal")
    return ParsedCall(name=name, arguments=args)


def _parse_snippet(src: str, params: dict[str, dict[str, Any]]) -> list[ParsedCall] | None:
    try:
        return _calls_from_json(json.loads(src), params)
    except json.JSONDecodeError:
        return _python_calls(src, params)


def _embedded_json(text: str, params: dict[str, dict[str, Any]]) -> list[ParsedCall]:
    decoder = json.JSONDecoder()
    calls: list[ParsedCall] = []
    pos = 0
    while (m := _JSON_START.search(text, pos)) is not None:
        try:
            obj, end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            pos = m.start() + 1
            continue
        calls.extend(_calls_from_json(obj, params) or [])
        pos = end
    return calls


def extract_calls(output: ModelOutput, params: dict[str, dict[str, Any]]) -> tuple[list[ParsedCall], str]:
    """The calls a reply made, and a note when the content tried to make one that could not be read."""
    if output.tool_calls:
        return [_with_arguments(c.name, c.arguments) for c in output.tool_calls], ""
    text = output.content.strip()
    tagged = _TAGGED.findall(text)
    if tagged:
        calls = [c for body in tagged for c in (_parse_snippet(body.strip(), params) or [])]
        return (calls, "") if calls else ([], "a <tool_call> block that does not parse")
    fenced = [c for _lang, body in _FENCE.findall(text) for c in (_parse_snippet(body, params) or [])]
    if fenced:  # a parallel call may come as one fence per call
        return fenced, ""
    whole = _parse_snippet(text, params)
    if whole:
        return whole, ""
    embedded = _embedded_json(text, params)
    if embedded:
        return embedded, ""
    if _LOOKS_LIKE_CALL.search(text):
        return [], "a tool call in the content that does not parse"
    return [], ""


_REQUEST = re.compile(
    r"\?|\b(?:please|need|needs|require|requires|let me know|could you|can you|would you|tell me|share|"
    r"provide|specify|confirm|what|which|who|whom|where|when)\b",
    re.I,
)
# "Email sent!", "Your table is booked", "I've emailed your landlord": an action that never happened
_CLAIMS_DONE = re.compile(
    r"\b(?:is|are|was|were|has been|have been)\s+(?:now\s+|all\s+)?(?:sent|booked|reserved|scheduled|"
    r"confirmed|created|set up)\b|\b(?:email|message|mail)\s+sent\b|^\W*(?:done|sent|booked)\b"
    r"|\bI(?:[’']ve| have)\s+(?:\w+\s+)?"
    r"(?:sent|booked|emailed|reserved|scheduled|created|notified|contacted)\b",
    re.I | re.M,
)
# "I'll assume you're in London", "I'll send it to landlord@gmail.com": a value the user never gave
_ASSUMES = re.compile(
    r"\b(?:I[’']ll|I will|let[’']s|I[’']m going to)\s+(?:just\s+)?(?:assume|go with|use|pick|default)\b"
    r"|\bassuming\b|\bdefault(?:ing)? to\b|\bI[’']ll send (?:it|this|that) to\b",
    re.I,
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")


def asks_question(text: str) -> bool:
    """Whether `text` requests something at all (a question, or "I'll need …", "please tell me …")."""
    return bool(_REQUEST.search(text))


def _asked_for(text: str, terms: dict[str, list[str]]) -> list[str]:
    """The missing arguments that a requesting sentence of `text` names."""
    named: list[str] = []
    text = re.sub(
        r"\n+(?=\s*(?:[-*•–]|\d{1,2}[.)])\s)", " ", text
    )  # "Could you tell me:\n1. …" is one request
    for sentence in re.split(r"(?<=\D[.!?])\s+|\n+", text):  # "1. The date" is no sentence end
        if not _REQUEST.search(sentence):
            continue
        for arg, words in terms.items():
            pattern = r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b"
            if arg not in named and re.search(pattern, sentence, re.I):
                named.append(arg)
    return named


def _norm_str(s: str) -> str:
    return re.sub(r"[\s,./\-_*^'\"]", "", s.casefold())  # BFCL's normalisation


def _equal(value: Any, want: Any, tol: float) -> bool:
    if isinstance(value, bool) or isinstance(want, bool):
        return value is want
    if isinstance(value, int | float) and isinstance(want, int | float):
        return math.isclose(value, want, rel_tol=1e-9, abs_tol=tol)
    if isinstance(value, str) and isinstance(want, str):
        return _norm_str(value) == _norm_str(want)
    if isinstance(value, list) and isinstance(want, list):
        return len(value) == len(want) and all(_equal(a, b, tol) for a, b in zip(value, want, strict=True))
    if isinstance(value, dict) and isinstance(want, dict):
        return value.keys() == want.keys() and all(_equal(value[k], want[k], tol) for k in want)
    return bool(value == want)


_OPS: dict[type[ast.AST], Any] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a**b,
}


def evaluate_expression(text: str) -> float | None:
    """The value of an arithmetic expression ("1234 × 5678", "2^10"), or None.

    Parsed with `ast` and walked by hand (numbers, + - * / // % ** and parentheses only), never
    eval'd; a bare number is not an expression. Huge powers are refused rather than computed.
    """
    src = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.strip().rstrip("="))
    src = re.sub(r"(?<=[\d)\s])[x×X·](?=[\s\d(])", "*", src).replace("÷", "/").replace("^", "**")
    src = src.replace("−", "-")
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError):
        return None

    def walk(node: ast.AST) -> float:
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value  # ints stay exact until the end
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
                raise ValueError("power too large")
            return _OPS[type(node.op)](left, right)  # type: ignore[no-any-return]
        raise ValueError(f"not arithmetic: {type(node).__name__}")

    if not isinstance(tree.body, ast.BinOp):
        return None
    try:
        return float(walk(tree.body))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _words(text: str) -> list[str]:
    """Lowercase word stems, punctuation and "n't" split off ("didn't" → did, not)."""
    text = re.sub(r"n[’']t\b", " not", text.casefold())
    return [re.sub(r"(?<=\w{3})(?:ing|ed|es|s)$", "", w) for w in re.findall(r"\w+", text)]


def _has_phrase(words: list[str], phrase: str) -> bool:
    want = _words(phrase)
    return any(words[i : i + len(want)] == want for i in range(len(words) - len(want) + 1))


def _keywords_problem(value: str, rule: ArgRule) -> str | None:
    words = _words(value)
    for keyword in rule.keywords:
        group = [keyword] if isinstance(keyword, str) else keyword
        if not any(_has_phrase(words, k) for k in group):
            return f"lacks {' or '.join(repr(k) for k in group)}"
    if bad := [x for x in rule.excludes if _has_phrase(words, x)]:
        return f"says {bad[0]!r}"
    return None


def _arg_problem(name: str, value: Any, want: Any, rule: ArgRule) -> str | None:
    if rule.any:
        return None
    if rule.expression and isinstance(value, str) and isinstance(want, str):
        got, expected = evaluate_expression(value), evaluate_expression(want)
        if got is None:
            return f"{name}={value!r} is not an arithmetic expression"
        if expected is not None and math.isclose(got, expected, rel_tol=1e-9):
            return None
        return f"{name}={value!r} = {got:g}, expected {want!r} = {expected:g}"
    if rule.keywords and isinstance(value, str):
        if problem := _keywords_problem(value, rule):
            return f"{name}={value!r} {problem}"
        return None
    tol = rule.tolerance if rule.tolerance is not None else 1e-6
    if any(_equal(value, w, tol) for w in [want, *rule.any_of]):
        return None
    if rule.contains_all and isinstance(value, str):
        folded = " ".join(value.casefold().split())
        if all(" ".join(part.casefold().split()) in folded for part in rule.contains_all):
            return None
    return f"{name}={value!r} (expected {want!r})"


def _call_problem(call: ParsedCall, want: ExpectedCall) -> str | None:
    if call.name != want.name:
        return f"{call.name} is not {want.name}"
    args = call.arguments or {}
    for arg, canonical in want.arguments.items():
        rule = want.match.get(arg, ArgRule())
        if arg not in args:
            if not rule.optional:
                return f"{want.name}: argument {arg} missing"
            continue
        if problem := _arg_problem(arg, args[arg], canonical, rule):
            return f"{want.name}: {problem}"
    return None


def _schema_problem(call: ParsedCall, schema: dict[str, Any]) -> str | None:
    args = call.arguments or {}
    known = schema.get("properties", {})
    if unexpected := sorted(set(args) - set(known)):
        return f"{call.name}: unexpected argument(s) {unexpected}"
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(args), key=lambda e: e.path)
    if errors:
        return f"{call.name}: {errors[0].message}"
    # BFCL's AST checker is strict where JSON Schema is lenient: 10.0 is not an integer argument
    # (a number parameter does take an int, as in BFCL). A string "10" already fails the schema.
    for arg, value in args.items():
        if known.get(arg, {}).get("type") == "integer" and isinstance(value, float):
            return f"{call.name}: {arg}={value!r} is a float, the schema wants an integer"
    return None


def _describe(calls: list[ParsedCall]) -> str:
    return ", ".join(f"{c.name}({json.dumps(c.arguments, sort_keys=True)})" for c in calls)


def check_tool_call(output: ModelOutput, spec: ToolCallSpec) -> Verdict:
    params = tool_parameters(spec.tools or [])
    calls, problem = extract_calls(output, params)
    if spec.expect == "none":
        if calls or problem:
            made = _describe(calls) if calls else problem
            return Verdict.fail(F.WRONG_FUNCTION, f"called a tool when none fits the request: {made}")
        return Verdict.ok("answered without calling a tool")
    if spec.expect == "ask":
        return _check_ask(output, spec, calls, problem)
    if not calls:
        if problem:
            return Verdict.fail(F.UNPARSEABLE, problem)
        return Verdict.fail(F.NO_CALL, "no tool call; expected " + ", ".join(c.name for c in spec.calls))
    if broken := [c for c in calls if c.arguments is None]:
        return Verdict.fail(F.UNPARSEABLE, f"{broken[0].name}: {broken[0].problem}")
    if unknown := [c.name for c in calls if c.name not in params]:
        return Verdict.fail(F.WRONG_FUNCTION, f"called unknown function(s) {unknown}")
    wanted = Counter(c.name for c in spec.calls)
    called = Counter(c.name for c in calls)
    if wanted != called:
        return Verdict.fail(
            F.WRONG_FUNCTION,
            f"calls {sorted(called.elements())}, expected {sorted(wanted.elements())}",
        )
    for call in calls:
        if schema_problem := _schema_problem(call, params[call.name]):
            return Verdict.fail(F.SCHEMA_INVALID, schema_problem)
    best: list[str] = []
    for order in itertools.permutations(calls):  # parallel calls match in any order (≤ 5 calls)
        problems = [p for c, w in zip(order, spec.calls, strict=True) if (p := _call_problem(c, w))]
        if not problems:
            return Verdict.ok(_describe(calls))
        if not best or len(problems) < len(best):
            best = problems  # report the pairing closest to a match
    return Verdict.fail(F.WRONG_ARGS, "; ".join(best))


def _check_ask(output: ModelOutput, spec: ToolCallSpec, calls: list[ParsedCall], problem: str) -> Verdict:
    missing = ", ".join(spec.missing)
    if calls:
        call = calls[0]
        if call.name != spec.function:
            return Verdict.fail(F.WRONG_FUNCTION, f"called {call.name} instead of asking for {missing}")
        args = call.arguments or {}
        if all(m in args for m in spec.missing):
            invented = ", ".join(f"{m}={args[m]!r}" for m in spec.missing)
            return Verdict.fail(F.WRONG_ARGS, f"invented {invented} instead of asking")
        return Verdict.fail(F.SCHEMA_INVALID, f"called {call.name} without {missing} instead of asking")
    if problem:
        return Verdict.fail(F.UNPARSEABLE, problem)
    text = output.content
    if done := _CLAIMS_DONE.search(text):
        return Verdict.fail(F.WRONG, f"claims an action that was never taken: {done.group().strip()!r}")
    params = tool_parameters(spec.tools or []).get(spec.function or "", {})
    emails = [m for m in spec.missing if "email" in str(params.get("properties", {}).get(m, {})).lower()]
    made_up = _ASSUMES.search(text) or (_EMAIL.search(text) if emails else None)
    if made_up:
        return Verdict.fail(F.WRONG, f"invents a value instead of asking: {made_up.group()!r}")
    # the argument's own name ("city", "date"), unless it is a little word like "to"
    terms = {m: [w for w in m.split("_") if len(w) > 2] + spec.ask_terms.get(m, []) for m in spec.missing}
    if named := _asked_for(text, terms):
        return Verdict.ok(f"asked for {', '.join(named)}")
    return Verdict.fail(F.WRONG, f"does not ask for {missing}")
