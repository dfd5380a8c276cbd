"""Grade model-written Python: extract it from a reply, run it in the sandbox, check in here.

The hidden tests are `assert` statements about calls to one function (`entry`), e.g.
`assert abs(to_fahrenheit(-40) + 40) < 1e-9`. They never run next to the model's code:
`plan_tests` takes each call to `entry` out of its assert, evaluates the arguments here, and
the sandbox (`quality/sandbox.py`) calls the function and sends back plain values (JSON). The
asserts then run here, in a namespace of safe builtins, on those decoded values. So the model's
code cannot see the expected values, forge the verdict, shadow `abs` or `len`, or return an
object whose `__eq__` is always true: no object it built ever reaches the comparison.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import re
import reprlib
import types
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgebench.quality import sandbox
from edgebench.quality._sandbox_runner import Opaque, decode, encode
from edgebench.textsafe import one_line

__all__ = [
    "RunResult",
    "TestPlan",
    "extract_code",
    "missing_nodes",
    "plan_tests",
    "run_python",
    "syntax_problem",
]

Status = Literal["passed", "failed", "error", "timeout", "syntax", "unsandboxed"]


class RunResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Status
    detail: str = ""
    output_tail: str = ""  # last lines the code printed (stdout + stderr)
    isolation: Literal["bwrap", "none"] = "none"  # "none": not run, or run unsandboxed because allowed


# What a hidden test may use besides the results: pure functions over plain values.
_SAFE_NAMES = "abs all any bool chr dict divmod enumerate filter float frozenset int isinstance len list"
_SAFE_NAMES += " map max min ord pow range repr reversed round set sorted str sum tuple type zip"
SAFE_BUILTINS: dict[str, Any] = {n: getattr(builtins, n) for n in _SAFE_NAMES.split()}
_SAFE_GLOBALS: dict[str, Any] = {"math": math}


@dataclass(frozen=True)
class _Check:
    source: str
    code: types.CodeType
    calls: tuple[int, ...]  # indexes into TestPlan.calls, bound as _r<index>


@dataclass(frozen=True)
class TestPlan:
    """The distinct calls to make in the sandbox, and the asserts to run here on their results."""

    entry: str
    calls: tuple[tuple[list[Any], dict[str, Any]], ...]
    call_text: tuple[str, ...]  # "fib(30)", for messages
    checks: tuple[_Check, ...]


def _checker_env(**slots: Any) -> dict[str, Any]:
    return {"__builtins__": SAFE_BUILTINS, **_SAFE_GLOBALS, **slots}


class _CallsToSlots(ast.NodeTransformer):
    def __init__(self, entry: str, test: str, keys: dict[str, int], plan: list[tuple[Any, str]]) -> None:
        self.entry, self.test, self.keys, self.plan = entry, test, keys, plan
        self.used: list[int] = []

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if not (isinstance(node.func, ast.Name) and node.func.id == self.entry):
            return self.generic_visit(node)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise ValueError(f"test {self.test!r}: write {self.entry}(...)'s arguments out, without * or **")
        try:
            args = [_evaluate(a) for a in node.args]
            kwargs = {str(k.arg): _evaluate(k.value) for k in node.keywords}
            key = json.dumps(encode([args, kwargs]), sort_keys=True)
        except Exception as exc:  # e.g. NameError: a variable of a comprehension around the call
            why = f"{self.entry}(...)'s arguments must be computable before the call from literals and "
            why += f"safe builtins ({type(exc).__name__}: {exc})"
            raise ValueError(f"test {self.test!r}: {why}") from exc
        if key not in self.keys:
            self.keys[key] = len(self.plan)
            text = ast.get_source_segment(self.test, node) or f"{self.entry}(...)"
            self.plan.append(((args, kwargs), one_line(text, 80)))
        self.used.append(self.keys[key])
        return ast.copy_location(ast.Name(id=f"_r{self.keys[key]}", ctx=ast.Load()), node)


def _evaluate(node: ast.expr) -> Any:
    # The suite's own text, evaluated on literals and safe builtins: never the model's.
    return eval(compile(ast.Expression(node), "<test>", "eval"), _checker_env())


def plan_tests(entry: str, tests: Sequence[str]) -> TestPlan:
    """Split asserts into sandbox calls and checker-side checks; ValueError says what is not allowed.

    Calls to `entry` must be direct (`entry(...)`, not `map(entry, …)`) with arguments computable
    here (literals and safe builtins: `list(range(1000))` is fine, a comprehension's variable is
    not); everything else in a test may use the safe builtins, `math` and names it binds itself."""
    keys: dict[str, int] = {}
    plan: list[tuple[Any, str]] = []
    checks = []
    for test in tests:
        try:
            tree = ast.parse(test, "<test>", "exec")
        except SyntaxError as e:
            raise ValueError(f"test does not compile: {test!r}: {e.msg}") from e
        slots = _CallsToSlots(entry, test, keys, plan)
        tree = ast.fix_missing_locations(slots.visit(tree))
        if not slots.used:
            raise ValueError(f"test {test!r} does not call {entry}()")
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.Lambda) for a in n.args.args}
        for n in ast.walk(tree):
            if not isinstance(n, ast.Name) or not isinstance(n.ctx, ast.Load) or n.id.startswith("_r"):
                continue
            if n.id not in SAFE_BUILTINS and n.id not in _SAFE_GLOBALS and n.id not in bound:
                what = f"{entry} other than as a direct call" if n.id == entry else repr(n.id)
                raise ValueError(f"test {test!r} uses {what}, which the checker does not have")
        code = compile(tree, "<test>", "exec")
        checks.append(_Check(source=test, code=code, calls=tuple(dict.fromkeys(slots.used))))
    return TestPlan(
        entry=entry,
        calls=tuple(c for c, _ in plan),
        call_text=tuple(t for _, t in plan),
        checks=tuple(checks),
    )


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(?:def |class |import |from |async def |@|[A-Za-z_]\w*\s*=)", re.M)


def extract_code(text: str, entry: str | None = None) -> str | None:
    """The Python in a reply: its fenced Python blocks, else the raw text, else the code in prose.

    Every fenced block that compiles is kept, in order: a solution split over two blocks (imports or
    a helper, then the function) works, and after a first try and its correction the later
    definition wins. Usage and test blocks come along; they run at import, where failing does no
    harm once the function is defined. Blocks that do not compile (a `>>>` session, output) are
    left out; if none compiles, the one defining `entry` is returned to be reported."""
    blocks = [
        str(body) for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")
    ]
    good = [body for body in blocks if _compiles(body)]
    if len(good) > 1 and _compiles(joined := "\n\n".join(good)):
        return joined
    if good:
        blocks = good
    if blocks:
        if entry:
            for body in blocks:
                if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", body, re.M):
                    return body
        return blocks[0]
    if _compiles(text):
        return text
    start = _CODE_START.search(text)  # prose around the code: from the first code-looking line,
    if start is None:  # the longest run of lines that compiles
        return None
    lines = text[start.start() :].splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if _compiles(candidate):
            return candidate
    return None


def _compiles(src: str) -> bool:
    try:
        with warnings.catch_warnings():  # see syntax_problem
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            ast.parse(src)
    except (SyntaxError, ValueError):
        return False
    return True


def syntax_problem(code: str) -> str | None:
    """Why `code` does not compile, or None; quietly: a model's `x is 1` or "\\d" must not print
    a SyntaxWarning / DeprecationWarning on our stderr (or fail a test run under -W error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            compile(code, "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        return str(e)
    return None


def missing_nodes(code: str, required: Sequence[str]) -> list[str]:
    """AST node types from `required` that `code` does not contain (structure, not string matching)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        present = {type(node).__name__ for node in ast.walk(ast.parse(code))}
    return [name for name in required if name not in present]


def run_python(
    code: str,
    tests: Sequence[str],
    *,
    setup: str = "",
    entry: str | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> RunResult:
    """Run `setup` and `code` in the sandbox, call `entry` as the tests need, check here; the first
    failing test is reported."""
    if not entry:
        raise ValueError("code tests need an entry function")
    plan = plan_tests(entry, tests)
    if problem := syntax_problem(code):
        return RunResult(status="syntax", detail=f"does not compile: {problem}")
    run = sandbox.run_calls(
        code, entry, list(plan.calls), setup=setup, timeout_s=timeout_s, memory_mb=memory_mb
    )
    tail = run.output_tail

    def result(status: Status, detail: str) -> RunResult:
        return RunResult(status=status, detail=detail, output_tail=tail, isolation=run.isolation)

    if run.status == "unsandboxed":
        return RunResult(status="unsandboxed", detail=run.detail)
    if run.status == "timeout" and not run.load_finished:
        return result("timeout", f"{run.detail} while loading the code")
    if not run.started:  # the code may also have overwritten the runner's report: same outcome
        return result(
            "error", f"no report from the sandbox: {run.detail or 'the results were tampered with'}"
        )
    if not run.load_finished:
        return result("error", f"the process ended while loading the code: {run.detail or 'exit code 0'}")
    if not run.loaded:
        raised = f" (the code raised {run.load_error})" if run.load_error else ""
        return result("error", f"no function named {entry}{raised}")
    for check in plan.checks:
        slots: dict[str, Any] = {}
        for i in check.calls:
            if i >= len(run.outcomes):
                where = f"in {plan.call_text[i]}"
                if run.status == "timeout":
                    return result("timeout", f"{run.detail} ({where})")
                return result("error", f"the process ended {where}: {run.detail or 'no result'}")
            outcome = run.outcomes[i]
            if outcome.raised is not None:
                why = f"{plan.call_text[i]} raised {outcome.raised}"
                return result("failed", f"failed: {check.source} ({why})")
            if outcome.unserialisable is not None:
                why = f"{plan.call_text[i]} returned no plain value: {outcome.unserialisable}"
                return result("failed", f"failed: {check.source} ({why})")
            try:
                slots[f"_r{i}"] = decode(outcome.value)
            except (ValueError, RecursionError) as exc:
                return result("error", f"unreadable result of {plan.call_text[i]}: {one_line(str(exc), 120)}")
        try:
            exec(check.code, _checker_env(**slots))  # suite data on decoded plain values
        except Exception as exc:
            got = "; ".join(f"{plan.call_text[i]} returned {_short(slots[f'_r{i}'])}" for i in check.calls)
            why = "" if isinstance(exc, AssertionError) else _error_note(exc)
            return result("failed", f"failed: {check.source} ({why}{got})")
    return result("passed", "")


def _error_note(exc: Exception) -> str:
    return f"{type(exc).__name__}: {one_line(str(exc), 120)}; "


_REPR = reprlib.Repr()  # a 16 MiB list is not rendered whole to show 120 characters of it
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 120, 120, 120


def _short(value: Any) -> str:
    if isinstance(value, Opaque):
        return f"a {value.type_name} object, not a plain value"
    try:
        return one_line(_REPR.repr(value), 120)
    except ValueError:  # an int past str()'s 4300-digit limit
        return f"an int of {value.bit_length()} bits" if isinstance(value, int) else "a value too big to show"
