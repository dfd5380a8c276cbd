"""llama-bench, one config per process, `-o json` parsed into typed records in one function."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgebench.runtime import proc
from edgebench.runtime.flags import BenchTest, RuntimeConfig, bench_argv
from edgebench.runtime.locate import Runtime

__all__ = ["BenchOutcome", "BenchRun", "diagnose_failure", "parse_bench_json", "run_bench"]

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


def _test_name(n_prompt: int, n_gen: int, depth: int) -> str:
    return BenchTest(n_prompt=n_prompt, n_gen=n_gen, depth=depth).name


def parse_bench_json(text: str) -> list[BenchRun]:
    """Parse llama-bench `-o json` stdout. Raises ValueError on anything that is not that."""
    start = text.find("[")
    if start < 0:
        raise ValueError("no JSON array in llama-bench output")
    data = json.loads(text[start:])
    if not isinstance(data, list):
        raise ValueError("llama-bench JSON is not a list")
    runs = []
    for row in data:
        runs.append(
            BenchRun(
                test=_test_name(int(row["n_prompt"]), int(row["n_gen"]), int(row.get("n_depth", 0))),
                n_prompt=int(row["n_prompt"]),
                n_gen=int(row["n_gen"]),
                n_depth=int(row.get("n_depth", 0)),
                avg_ts=float(row["avg_ts"]),
                stddev_ts=float(row["stddev_ts"]),
                samples_ts=[float(x) for x in row.get("samples_ts", [])],
                model_type=str(row.get("model_type", "")),
                model_size=int(row.get("model_size", 0)),
                model_n_params=int(row.get("model_n_params", 0)),
                build_commit=str(row.get("build_commit", "")),
                build_number=int(row.get("build_number", 0)),
                cpu_info=str(row.get("cpu_info", "")),
                backends=str(row.get("backends", "")),
                raw=row,
            )
        )
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
    """Run one llama-bench test in its own process; never raises for what llama-bench does."""
    argv = bench_argv(runtime.binary("llama-bench"), model_path, cfg, test, runtime.dialect)
    res = proc.run(argv, timeout_s=timeout_s, rss_limit_mib=rss_limit_mib)
    status, detail, runs = res.cause, res.detail, []
    if res.ok:
        try:
            runs = parse_bench_json(res.stdout)
        except (ValueError, KeyError, TypeError) as exc:
            status, detail = proc.ExitCause.FAILED, f"unreadable llama-bench JSON: {exc}"
        if status is proc.ExitCause.OK and not runs:
            status, detail = proc.ExitCause.FAILED, "llama-bench printed no results"
    return BenchOutcome(
        argv=argv,
        status=status,
        detail=detail,
        runs=runs,
        peak_rss_mib=round(res.peak_rss_mib, 1),
        wall_s=round(res.wall_s, 3),
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
    for line in reversed(res.stderr.splitlines()):
        m = _WHY.match(line.strip())
        if m:
            return f"{m.group(1)}: {m.group(2)}"[:240]
    return None
