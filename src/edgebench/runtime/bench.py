"""llama-bench, one config per process, `-o json` parsed into typed records in one function."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgebench.runtime import proc
from edgebench.runtime.flags import BenchTest, RuntimeConfig, bench_argv
from edgebench.runtime.locate import Runtime
from edgebench.textsafe import one_line

__all__ = ["BenchOutcome", "BenchRun", "InvalidOutput", "diagnose_failure", "parse_bench_json", "run_bench"]

# llama-bench only says "failed to create context"; with -v the line before it says why
# ("quantized V cache requires flash_attn to be enabled", "K cache type q8_0 ... does not divide").
_WHY = re.compile(
    r"^(llama_init_from_model|llama_context|llama_model_load|llama_kv_cache\w*|"
    r"ggml_\w+|gguf_\w+): (.*(requires|does not|not supported|failed|error|invalid|"
    r"too (large|big|small)|cannot|unable).*)$",
    re.IGNORECASE,
)


class BenchRun(BaseModel):
    """One test row of llama-bench's JSON (tools/llama-bench/llama-bench.cpp `json_printer`)."""

    model_config = ConfigDict(frozen=True)

    test: str
    n_prompt: int
    n_gen: int
    n_depth: int
    avg_ts: float
    stddev_ts: float
    samples_ts: list[float]
    model_type: str
    model_size: int
    model_n_params: int
    build_commit: str
    build_number: int
    cpu_info: str
    backends: str
    raw: dict[str, Any]


class BenchOutcome(BaseModel):
    """A finished llama-bench process: its rows if it worked, its classified cause if not."""

    model_config = ConfigDict(frozen=True)

    argv: list[str]
    status: proc.ExitCause
    detail: str
    runs: list[BenchRun]
    peak_rss_mib: float
    wall_s: float
    cpu_s: float = 0.0  # its own CPU seconds: what the CPUs did besides it is someone else's


# No CPU or GPU decodes or prefills a billion tokens a second: beyond that the number is garbage.
MAX_TS = 1e9
_INT_FIELDS = ("n_prompt", "n_gen", "n_depth", "model_size", "model_n_params", "build_number")


class InvalidOutput(ValueError):
    """llama-bench exited 0 but printed something that is not a valid result for the test."""


def _test_name(n_prompt: int, n_gen: int, depth: int) -> str:
    return BenchTest(n_prompt=n_prompt, n_gen=n_gen, depth=depth).name


def _non_finite(token: str) -> Any:
    raise InvalidOutput(f"{token} in the JSON")


def _finite_float(token: str) -> float:
    x = float(token)
    if not math.isfinite(x):
        raise InvalidOutput(f"{token[:20]} overflows a float")
    return x


def _rate(row: dict[str, Any], key: str, *, zero_ok: bool = False) -> float:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidOutput(f"{key} is not a number: {str(v)[:40]!r}")
    x = float(v)
    if not (x >= 0 if zero_ok else x > 0) or x > MAX_TS:
        raise InvalidOutput(f"{key} {x:g} is not a plausible rate")
    return x


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float)


def _int(row: dict[str, Any], key: str) -> int:
    v = row.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidOutput(f"{key} is not an integer: {str(v)[:40]!r}")
    return v


def _run_of(row: Any, expect: BenchTest | None) -> BenchRun:
    if not isinstance(row, dict):
        raise InvalidOutput(f"a row is a {type(row).__name__}, not an object")
    for key in ("n_prompt", "n_gen", "avg_ts", "stddev_ts", "samples_ts"):
        if key not in row:
            raise InvalidOutput(f"a row has no {key}")
    for key, v in row.items():  # llama-bench's rows are flat: the row is stored as it came
        if not (_scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v))):
            raise InvalidOutput(f"{one_line(key, 40)} is nested, not a value or a list of values")
    n_prompt, n_gen, n_depth = (_int(row, k) for k in ("n_prompt", "n_gen", "n_depth"))
    if expect is not None and (n_prompt, n_gen, n_depth) != (expect.n_prompt, expect.n_gen, expect.depth):
        got = f"n_prompt={n_prompt} n_gen={n_gen} n_depth={n_depth}"[:120]
        raise InvalidOutput(f"a row for another test ({got}) than {expect.name}")
    samples = row["samples_ts"]
    if not isinstance(samples, list) or not samples:
        raise InvalidOutput("no samples_ts")
    if expect is not None and len(samples) != expect.reps:
        raise InvalidOutput(f"{len(samples)} samples for {expect.reps} repetitions")
    values = [_rate({"samples_ts": x}, "samples_ts") for x in samples]
    return BenchRun(
        test=_test_name(n_prompt, n_gen, n_depth),
        n_prompt=n_prompt,
        n_gen=n_gen,
        n_depth=n_depth,
        avg_ts=_rate(row, "avg_ts"),
        stddev_ts=_rate(row, "stddev_ts", zero_ok=True),
        samples_ts=values,
        model_type=str(row.get("model_type", "")),
        model_size=_int(row, "model_size"),
        model_n_params=_int(row, "model_n_params"),
        build_commit=str(row.get("build_commit", "")),
        build_number=_int(row, "build_number"),
        cpu_info=str(row.get("cpu_info", "")),
        backends=str(row.get("backends", "")),
        raw=row,
    )


def parse_bench_json(text: str, expect: BenchTest | None = None) -> list[BenchRun]:
    """Parse llama-bench `-o json` stdout into runs; with `expect`, exactly one run, for that test.

    Raises InvalidOutput (a ValueError) for anything that is not that: not JSON, NaN or infinite
    numbers anywhere (the row is stored: it must stay valid JSON), non-positive or absurd rates,
    missing or mistyped fields, a row for another test, the wrong number of samples."""
    start = text.find("[")
    if start < 0:
        raise InvalidOutput("no JSON array in llama-bench's output")
    try:
        data = json.loads(text[start:], parse_constant=_non_finite, parse_float=_finite_float)
    except RecursionError:
        raise InvalidOutput("JSON nested too deeply") from None
    except InvalidOutput:
        raise
    except ValueError as exc:  # JSONDecodeError, an integer too long to convert
        raise InvalidOutput(f"not JSON: {exc}") from None
    if not isinstance(data, list):
        raise InvalidOutput("llama-bench's JSON is not a list")
    runs = [_run_of(row, expect) for row in data]
    if expect is not None and len(runs) != 1:
        raise InvalidOutput(f"{len(runs)} rows for one test")
    return runs


def run_bench(
    runtime: Runtime,
    model_path: str,
    cfg: RuntimeConfig,
    test: BenchTest,
    *,
    timeout_s: float = 600,
    rss_limit_mib: float | None = None,
) -> BenchOutcome:
    """Run one llama-bench test in its own process; never raises for what llama-bench does or
    prints: output that is not a valid result for `test` is an INVALID_OUTPUT outcome."""
    argv = bench_argv(runtime.binary("llama-bench"), model_path, cfg, test, runtime.dialect)
    res = proc.run(argv, timeout_s=timeout_s, rss_limit_mib=rss_limit_mib, measured=True)
    status, detail, runs = res.cause, res.detail, []
    if res.ok:
        try:
            runs = parse_bench_json(res.stdout, test)
        except (ValueError, RecursionError) as exc:  # InvalidOutput; RecursionError: belt and braces
            status, detail = proc.ExitCause.INVALID_OUTPUT, one_line(f"invalid output: {exc}", 240)
    return BenchOutcome(
        argv=argv,
        status=status,
        detail=detail,
        runs=runs,
        peak_rss_mib=round(res.peak_rss_mib, 1),
        wall_s=round(res.wall_s, 3),
        cpu_s=res.cpu_s,
    )


def diagnose_failure(
    runtime: Runtime, model_path: str, cfg: RuntimeConfig, test: BenchTest, *, timeout_s: float = 120
) -> str | None:
    """Re-run a failed config once with -v and return llama.cpp's own reason line, if it gave one."""
    quick = test.model_copy(update={"reps": 1, "warmup": False})
    argv = bench_argv(runtime.binary("llama-bench"), model_path, cfg, quick, runtime.dialect, verbose=True)
    res = proc.run(argv, timeout_s=timeout_s)
    if res.ok:
        return None
    for line in reversed(proc.output_lines(res.stderr)):
        m = _WHY.match(line)
        if m:
            return one_line(f"{m.group(1)}: {m.group(2)}", 240)
    return None
