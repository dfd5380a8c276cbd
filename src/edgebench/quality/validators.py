"""Validators by spec type (`@register(NumericSpec)`), each `(ModelOutput, spec) -> Verdict`.

Every registered validator is wrapped so that it classifies the same way before it looks at the
answer: `timeout`, `template_missing`, then `empty` (nothing left after `sanitize`). Afterwards a
failed answer that reads as a refusal ("I can't…", "as an AI…") is reported as `refused`.
Call `validate(output, item.validator)`; the registry is open for new kinds.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar, get_args

import jsonschema  # type: ignore[import-untyped]
from pydantic import BaseModel

from edgebench.quality.coderun import extract_code, missing_nodes, run_python, syntax_problem
from edgebench.quality.extract import Finder, Mention, extract, is_negated, sentences
from edgebench.quality.numbers import answer_quantities, convert
from edgebench.quality.records import FailureClass, ModelOutput, Verdict
from edgebench.quality.sanitize import sanitize
from edgebench.quality.specs import (
    AllSpec,
    BulletsSpec,
    ChoiceSpec,
    CodeSpec,
    ContainsSpec,
    CsvSpec,
    ExactSpec,
    JsonSpec,
    NumericSpec,
    RegexSpec,
    SentencesSpec,
    ToolCallSpec,
    ValidatorSpec,
    WordsSpec,
)
from edgebench.quality.toolcall import check_tool_call

__all__ = ["looks_like_refusal", "register", "registered", "validate"]

F = FailureClass
SpecT = TypeVar("SpecT", bound=BaseModel)
Check = Callable[[ModelOutput, SpecT], Verdict]

_REGISTRY: dict[str, Callable[[ModelOutput, Any], Verdict]] = {}
_REFUSABLE = {F.WRONG, F.UNPARSEABLE, F.NO_CALL, F.SCHEMA_INVALID}
_REFUSAL = re.compile(
    r"\bI\s*(?:can[’']?t|cannot|can not|am unable to|[’']m unable to|am not able to|[’']m not able to|"
    r"won[’']?t|will not)\s+(?:\w+\s+){0,2}?(?:help|assist|provide|do|execute|call|access|answer|comply|"
    r"browse|perform|run|use|fulfil+|complete|write|give|share|support|generate|create)\b"
    r"|\bas an ai\b|\bas a (?:large )?language model\b|\bI[’']?m (?:just |only )?an ai\b"
    r"|\bI only provide information\b|\bI[’']?m sorry,? but I\b"
    r"|\bI (?:do not|don[’']?t) have (?:access|the ability)\b",
    re.I,
)


def looks_like_refusal(text: str) -> bool:
    """A refusal shows itself early; a phrase deep inside a long answer is not one."""
    return bool(_REFUSAL.search(text[:300]))


def _kind(spec_type: type[BaseModel]) -> str:
    """A spec's kind is its `kind: Literal[...]` field: the one place the name is spelled."""
    (kind,) = get_args(spec_type.model_fields["kind"].annotation)
    return str(kind)


def register(spec_type: type[SpecT]) -> Callable[[Check[SpecT]], Check[SpecT]]:
    """Add the validator for a spec type (its `kind`); the returned function already applies the
    shared classification. The spec type is the single definition of the kind."""
    kind = _kind(spec_type)

    def decorate(check: Check[SpecT]) -> Check[SpecT]:
        if kind in _REGISTRY:
            raise ValueError(f"validator {kind!r} is registered twice")

        def guarded(output: ModelOutput, spec: SpecT) -> Verdict:
            return _guarded(check, output, spec)

        guarded.__name__ = guarded.__qualname__ = check.__name__
        guarded.__doc__ = check.__doc__
        _REGISTRY[kind] = guarded
        return guarded

    return decorate


def registered() -> dict[str, Callable[[ModelOutput, Any], Verdict]]:
    return dict(_REGISTRY)


def validate(output: ModelOutput, spec: ValidatorSpec) -> Verdict:
    """Score one reply against an item's validator spec."""
    return _REGISTRY[spec.kind](output, spec)


def _guarded(check: Check[SpecT], output: ModelOutput, spec: SpecT) -> Verdict:
    if output.timed_out:
        return Verdict.fail(F.TIMEOUT, "request timed out" + (f": {output.error}" if output.error else ""))
    if output.template_missing:
        return Verdict.fail(F.TEMPLATE_MISSING, "the model has no chat template")
    clean = sanitize(output.content, output.reasoning_content)
    if not clean.text and not output.tool_calls:
        if output.error:
            return Verdict.fail(F.EMPTY, f"request failed: {output.error}")
        thinking = {"think_unclosed", "reasoning_only"} & set(clean.stripped)
        return Verdict.fail(F.EMPTY, "only reasoning, no answer" if thinking else "empty reply")
    if not clean.text and not isinstance(spec, ToolCallSpec):
        names = ", ".join(c.name for c in output.tool_calls)
        return Verdict.fail(F.WRONG_FUNCTION, f"called {names} instead of answering")
    out = output.model_copy(update={"content": clean.text})
    try:
        verdict = check(out, spec)
    except RecursionError:  # e.g. "[[[[…" thousands deep: the JSON decoder gives up
        return Verdict.fail(F.UNPARSEABLE, "the reply is nested too deeply to parse")
    if verdict.passed:
        return verdict
    if verdict.failure in _REFUSABLE and not out.tool_calls and looks_like_refusal(clean.text):
        first = clean.text.strip().splitlines()[0][:100]
        return Verdict.fail(F.REFUSED, f"refused: {first}")
    if output.finish_reason == "length":
        return Verdict.fail(verdict.failure, verdict.detail + " (cut off at max_tokens)")
    return verdict


def _words_in(needle: str, text: str, word_boundary: bool, case_sensitive: bool) -> bool:
    flags = 0 if case_sensitive else re.I
    pattern = re.escape(needle.strip())
    if word_boundary:
        pattern = rf"(?<!\w){pattern}(?!\w)"
    return re.search(pattern, text, flags) is not None


# --- answers -------------------------------------------------------------------------------------


@register(NumericSpec)
def _numeric(out: ModelOutput, spec: NumericSpec) -> Verdict:
    def find(segment: str) -> list[Mention]:
        return [
            # without a unit, a bare number beats a measured one in a tie ("one day earlier, on day 29")
            Mention(
                q.start, q.end, repr(convert(q, spec.unit)), approx, weak=spec.unit is None and bool(q.unit)
            )
            for q, approx in answer_quantities(segment, spec.unit)
        ]

    def close(a: float, b: float, approx: bool) -> bool:
        rel = max(spec.rel_tolerance, spec.approx_tolerance if approx else 0.0, 1e-9)
        return math.isclose(a, b, rel_tol=rel, abs_tol=spec.tolerance)

    def same(a: Mention, b: Mention) -> bool:
        return close(float(a.key), float(b.key), a.approx or b.approx)

    found = extract(out.content, find, same=same, cues=spec.cues)
    if found.mention is None:
        failure = F.UNPARSEABLE if found.problem == "no candidate" else F.WRONG
        what = "no number in the answer" if failure is F.UNPARSEABLE else found.problem
        return Verdict.fail(failure, what)
    m = found.mention
    value, shown = float(m.key), found.region[m.start : m.end].strip()
    if close(value, spec.answer, m.approx):
        return Verdict.ok(f"read {shown!r} = {value:g}")
    return Verdict.fail(
        F.WRONG, f"read {shown!r} = {value:g}, expected {spec.answer:g} {spec.unit or ''}".rstrip()
    )


_WRAPPING = " \t\n\"'`*_“”‘’"


def _bare(text: str) -> str:
    """Without surrounding quotes, markdown emphasis, `Answer:` and a final full stop."""
    text = re.sub(r"^\s*(?:final\s+)?answer\s*[:\-]\s*", "", text.strip(_WRAPPING), flags=re.I)
    return text.strip(_WRAPPING).rstrip(".!").strip(_WRAPPING)


@register(ExactSpec)
def _exact(out: ModelOutput, spec: ExactSpec) -> Verdict:
    got = _bare(out.content)

    def key(s: str) -> str:
        s = " ".join(s.split())
        return s if spec.case_sensitive else s.casefold()

    if any(key(got) == key(want) for want in spec.answer):
        return Verdict.ok(f"{got!r}")
    if any(_words_in(want, out.content, True, spec.case_sensitive) for want in spec.answer):
        return Verdict.fail(F.UNPARSEABLE, f"the answer is there but not alone: {got[:80]!r}")
    return Verdict.fail(F.WRONG, f"{got[:80]!r}, expected {' or '.join(repr(a) for a in spec.answer)}")


def _needle(phrase: str, word_boundary: bool) -> str:
    """A regex for `phrase`; a multi-word one may be spaced or hyphenated ("Hyper Text Markup")."""
    phrase = " ".join(phrase.split())
    if " " in phrase:
        letters = [re.escape(ch) for ch in phrase.replace(" ", "")]
        pattern = r"[\s-]?".join(letters)
    else:
        pattern = re.escape(phrase)
    return rf"(?<!\w){pattern}(?!\w)" if word_boundary else pattern


def _phrase_finder(phrases: list[tuple[str, str]], word_boundary: bool, case_sensitive: bool) -> Finder:
    """Mentions of (key, phrase) pairs; of overlapping ones the longer ("not valid" over "valid") wins."""
    compiled = [
        (key, re.compile(_needle(phrase, word_boundary), 0 if case_sensitive else re.I))
        for key, phrase in phrases
    ]

    def find(segment: str) -> list[Mention]:
        found = [Mention(m.start(), m.end(), key) for key, rx in compiled for m in rx.finditer(segment)]
        found.sort(key=lambda f: (f.start, -f.end))
        kept: list[Mention] = []
        for mention in found:
            if kept and mention.start < kept[-1].end:
                continue  # inside the previous, longer mention
            kept.append(mention)
        return kept

    return find


@register(ContainsSpec)
def _contains(out: ModelOutput, spec: ContainsSpec) -> Verdict:
    text = out.content
    needles = [*spec.any_of, *spec.all_of]
    find = _phrase_finder(
        [("answer", n) for n in needles] + [(f"wrong:{d}", d) for d in spec.distractors],
        spec.word_boundary,
        spec.case_sensitive,
    )
    if forbidden := [n for n in spec.none_of if _words_in(n, text, spec.word_boundary, spec.case_sensitive)]:
        return Verdict.fail(F.WRONG, f"mentions {forbidden}")
    found = extract(text, find, cues=spec.cues)
    if found.mention is None:
        if found.problem == "no candidate":
            return Verdict.fail(F.WRONG, f"mentions none of {needles} as the answer")
        return Verdict.fail(F.WRONG, found.problem)
    if found.mention.key != "answer":
        return Verdict.fail(F.WRONG, f"answered {found.mention.key.removeprefix('wrong:')!r}")
    if spec.any_of and not any(_live(n, text, spec) for n in spec.any_of):
        return Verdict.fail(F.WRONG, f"mentions none of {spec.any_of}")
    if missing := [n for n in spec.all_of if not _live(n, text, spec)]:
        return Verdict.fail(F.WRONG, f"does not mention {missing}")
    return Verdict.ok("mentions " + ", ".join(n for n in needles if _live(n, text, spec)))


def _live(needle: str, text: str, spec: ContainsSpec) -> bool:
    """`needle` is mentioned at least once without a negation."""
    find = _phrase_finder([("answer", needle)], spec.word_boundary, spec.case_sensitive)
    return any(not is_negated(text, m) for m in find(text))


@register(RegexSpec)
def _regex(out: ModelOutput, spec: RegexSpec) -> Verdict:
    pattern = spec.compiled()
    text = out.content.strip()
    matched = pattern.fullmatch(text) if spec.full else pattern.search(text)
    if matched:
        return Verdict.ok(f"matched {matched.group()[:80]!r}")
    return Verdict.fail(F.WRONG, f"does not match /{spec.pattern}/: {text[:80]!r}")


@register(ChoiceSpec)
def _choice(out: ModelOutput, spec: ChoiceSpec) -> Verdict:
    phrases = [(o, p) for o in spec.options for p in [o, *spec.aliases.get(o, [])]]
    find = _phrase_finder(phrases, word_boundary=True, case_sensitive=False)

    def flip(option: str) -> str:
        """With two options, "not valid" / "isn't valid" means the other one."""
        others = [o for o in spec.options if o != option]
        return others[0] if len(spec.options) == 2 else ""

    found = extract(out.content, find, cues=spec.cues, pick=spec.pick, flip=flip)
    if found.mention is None:
        if found.problem == "no candidate":
            return Verdict.fail(F.UNPARSEABLE, f"mentions none of {spec.options}")
        return Verdict.fail(F.WRONG, found.problem)
    chosen = found.mention.key
    if chosen.casefold() == spec.answer.casefold():
        return Verdict.ok(chosen)
    return Verdict.fail(F.WRONG, f"answered {chosen!r}, expected {spec.answer!r}")


# --- structured output ---------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([\w-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_MISSING = object()


def _find_json(text: str) -> Any:
    for _lang, body in _FENCE.findall(text):
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[{\[]", text):
        try:
            return decoder.raw_decode(text, m.start())[0]
        except json.JSONDecodeError:
            continue
    return _MISSING


def _same_value(value: Any, want: Any) -> bool:
    if isinstance(value, bool) or isinstance(want, bool):
        return value is want
    if isinstance(value, int | float) and isinstance(want, int | float):
        return math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(value, str) and isinstance(want, str):
        return " ".join(value.casefold().split()) == " ".join(want.casefold().split())
    if isinstance(value, list) and isinstance(want, list):
        return len(value) == len(want) and all(_same_value(a, b) for a, b in zip(value, want, strict=True))
    if isinstance(value, dict) and isinstance(want, dict):
        return value.keys() == want.keys() and all(_same_value(value[k], want[k]) for k in want)
    return bool(value == want)


def _json_content(data: Any, spec: JsonSpec) -> Verdict:
    if spec.json_schema is not None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(spec.json_schema).iter_errors(data)
        )
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "top level"
            return Verdict.fail(F.SCHEMA_INVALID, f"schema: {where}: {error.message}")
    if spec.values:
        if not isinstance(data, dict):
            return Verdict.fail(F.SCHEMA_INVALID, f"expected an object, got {type(data).__name__}")
        if absent := [k for k in spec.values if k not in data]:
            return Verdict.fail(F.SCHEMA_INVALID, f"missing keys {absent}")
        for key, want in spec.values.items():
            if not _same_value(data[key], want):
                return Verdict.fail(F.WRONG, f"{key}={data[key]!r}, expected {want!r}")
    return Verdict.ok()


@register(JsonSpec)
def _json(out: ModelOutput, spec: JsonSpec) -> Verdict:
    text = out.content.strip()
    try:
        data, wrapped = json.loads(text), False
    except json.JSONDecodeError:
        data, wrapped = _find_json(text), True
    if data is _MISSING:
        return Verdict.fail(F.UNPARSEABLE, "no JSON in the reply")
    verdict = _json_content(data, spec)
    if spec.raw and wrapped:
        how = "in a code fence" if "```" in text else "with text around it"
        inner = "otherwise correct" if verdict.passed else f"and also {verdict.failure.value}"
        return Verdict.fail(F.UNPARSEABLE, f"raw JSON required, got it {how} ({inner})")
    return verdict


@register(CsvSpec)
def _csv(out: ModelOutput, spec: CsvSpec) -> Verdict:
    text = out.content.strip()
    fences = _FENCE.findall(text)
    if fences:
        lines, wrapped = [ln for ln in fences[0][1].splitlines() if ln.strip()], True
    else:
        every = [ln for ln in text.splitlines() if ln.strip()]
        lines = _longest_run(every, lambda ln: "," in ln) if spec.width > 1 else every
        wrapped = len(lines) != len(every)
    if not lines:
        return Verdict.fail(F.UNPARSEABLE, "no comma-separated lines")
    rows = [[cell.strip() for cell in row] for row in csv.reader(lines)]
    for i, row in enumerate(rows):
        if len(row) != spec.width:
            return Verdict.fail(F.WRONG, f"line {i + 1} has {len(row)} fields, expected {spec.width}")
        if any(not cell for cell in row):
            return Verdict.fail(F.WRONG, f"line {i + 1} has an empty field")
    if spec.header is not None and [c.casefold() for c in rows[0]] != [h.casefold() for h in spec.header]:
        return Verdict.fail(F.WRONG, f"header is {rows[0]}, expected {spec.header}")
    if len(rows) - 1 != spec.rows:
        return Verdict.fail(F.WRONG, f"{len(rows) - 1} data rows, expected {spec.rows}")
    if spec.raw and wrapped:
        return Verdict.fail(F.UNPARSEABLE, "raw CSV required, got it inside a fence or with text around it")
    return Verdict.ok(f"{len(rows) - 1} rows × {spec.width} columns")


def _longest_run(lines: list[str], keep: Callable[[str], bool]) -> list[str]:
    best: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if line and keep(line):
            run.append(line)
            continue
        if len(run) > len(best):
            best = run
        run = []
    return best


# --- instructions --------------------------------------------------------------------------------

# A bullet: -, *, +, •, en/em dash, middle dot and other glyphs, "1." / "1)" / "(1)" / "a)".
_BULLET = re.compile(r"^\s*(?:[-*+•–—·▪◦‣●○■►➤✓✔]|\(?\d{1,3}[.)]|\(?[a-z][)])\s+\S")


def count_sentences(text: str) -> int:
    """Sentences, not split at "U.S.", "e.g.", "Dr.", "Inc." or decimals; list markers are not ends."""
    text = re.sub(r"(?m)^\s*(?:\d{1,3}[.)]|[-*•–·])\s+", "", text)
    return len(sentences(text))


def count_words(text: str) -> int:
    return len(re.findall(r"[\w'’-]*\w[\w'’-]*", text))


@register(SentencesSpec)
def _sentences(out: ModelOutput, spec: SentencesSpec) -> Verdict:
    n = count_sentences(out.content)
    wanted = spec.check(n)
    return (
        Verdict.fail(F.WRONG, f"{n} sentences, expected {wanted}") if wanted else Verdict.ok(f"{n} sentences")
    )


@register(WordsSpec)
def _words(out: ModelOutput, spec: WordsSpec) -> Verdict:
    n = count_words(out.content)
    wanted = spec.check(n)
    return Verdict.fail(F.WRONG, f"{n} words, expected {wanted}") if wanted else Verdict.ok(f"{n} words")


@register(BulletsSpec)
def _bullets(out: ModelOutput, spec: BulletsSpec) -> Verdict:
    lines: list[str] = []
    for line in out.content.splitlines():
        if not line.strip():
            continue
        if lines and _BULLET.match(lines[-1]) and line[:1].isspace() and not _BULLET.match(line):
            lines[-1] += " " + line.strip()  # a wrapped bullet goes on, indented
        else:
            lines.append(line)
    bullets = [ln for ln in lines if _BULLET.match(ln)]
    wanted = spec.check(len(bullets))
    if wanted:
        return Verdict.fail(F.WRONG, f"{len(bullets)} bullets, expected {wanted}")
    if spec.only and len(bullets) != len(lines):
        return Verdict.fail(F.WRONG, f"{len(lines) - len(bullets)} non-bullet line(s) besides the bullets")
    return Verdict.ok(f"{len(bullets)} bullets")


# --- code and tools ------------------------------------------------------------------------------


@register(CodeSpec)
def _code(out: ModelOutput, spec: CodeSpec) -> Verdict:
    code = extract_code(out.content, spec.entry)
    if code is None:
        return Verdict.fail(F.UNPARSEABLE, "no Python code that compiles")
    if problem := syntax_problem(code):
        return Verdict.fail(F.UNPARSEABLE, f"the code does not compile: {problem}")
    if absent := missing_nodes(code, spec.requires):
        return Verdict.fail(F.WRONG, f"the code does not use {absent}")
    result = run_python(
        code,
        spec.tests,
        setup=spec.setup,
        entry=spec.entry,
        timeout_s=spec.timeout_s,
        memory_mb=spec.memory_mb,
    )
    bare = result.isolation == "none"
    unisolated = " (run WITHOUT a sandbox: allowed by allow_unsandboxed)" if bare else ""
    if result.status == "passed":
        return Verdict.ok(f"{len(spec.tests)} tests passed{unisolated}")
    if result.status == "unsandboxed":  # neither a pass nor a fail of the model: it was not run
        return Verdict.fail(F.UNSANDBOXED, f"code: {result.detail}")
    if result.status == "timeout":
        return Verdict.fail(F.TIMEOUT, f"code: {result.detail}{unisolated}")
    if result.status == "syntax":
        return Verdict.fail(F.UNPARSEABLE, result.detail)
    return Verdict.fail(F.WRONG, (result.detail or result.output_tail[-200:]) + unisolated)


register(ToolCallSpec)(check_tool_call)


@register(AllSpec)
def _all(out: ModelOutput, spec: AllSpec) -> Verdict:
    inner = out.model_copy(update={"finish_reason": None})  # the outer wrapper notes truncation once
    for i, check in enumerate(spec.checks, 1):
        verdict = validate(inner, check)
        if not verdict.passed:
            return Verdict.fail(verdict.failure, f"check {i} ({check.kind}): {verdict.detail}")
    return Verdict.ok(f"{len(spec.checks)} checks passed")


def _check_complete() -> None:
    """Every spec type in the ValidatorSpec union has exactly one validator, and nothing else is
    registered: a new spec without a check fails at import, not on the first reply it meets."""
    union = get_args(get_args(ValidatorSpec)[0])
    kinds = {_kind(t) for t in union}
    if kinds != set(_REGISTRY):
        raise RuntimeError(f"validators and specs disagree: {sorted(kinds ^ set(_REGISTRY))}")


_check_complete()
