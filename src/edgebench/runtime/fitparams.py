"""llama.cpp's own memory projection: `llama-fit-params -fitp on` for one model and config.

The planner's second opinion for what it does not model (an architecture it has not been checked
on): llama-fit-params builds the model and context with `no_alloc` and prints, per device, the
model / context / compute MiB its allocator would reserve (common/fit.cpp). Exact for the build
that runs it, but not the whole host: it reserves logits for a full ubatch where llama-server
reserves one row per slot, and leaves the CPU_REPACK copy and the process out of "Host".
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.runtime.flags import RuntimeConfig, fit_params_argv
from edgebench.runtime.locate import Runtime
from edgebench.runtime.proc import run
from edgebench.textsafe import one_line

__all__ = ["Projection", "parse_fit_print", "project_memory"]


class Projection(BaseModel):
    """llama-fit-params' projected host buffers (whole MiB, as it prints them): a projection by
    llama.cpp itself, neither our prediction nor a measurement."""

    model_config = ConfigDict(frozen=True)

    source: str = "llama-fit-params"
    model_mib: float | None = None
    context_mib: float | None = None
    compute_mib: float | None = None
    error: str | None = None  # why there is no projection (refused, no binary, timeout)

    @property
    def total_mib(self) -> float | None:
        parts = (self.model_mib, self.context_mib, self.compute_mib)
        return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


def parse_fit_print(stdout: str) -> Projection | None:
    """The `Host <model> <context> <compute>` line of `-fitp on`, or None."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "Host" and all(p.isdigit() for p in parts[1:]):
            m, c, k = (float(p) for p in parts[1:])
            return Projection(model_mib=m, context_mib=c, compute_mib=k)
    return None


def project_memory(
    runtime: Runtime, model: Path | str, cfg: RuntimeConfig, timeout_s: float = 300
) -> Projection:
    """Run llama-fit-params for `cfg`; failures come back as Projection(error=…), never raised."""
    try:
        argv = fit_params_argv(runtime.binary("llama-fit-params"), str(model), cfg)
    except Exception as e:  # RuntimeNotFound: an older build without the tool
        return Projection(error=one_line(str(e)))
    res = run(argv, timeout_s=timeout_s)
    got = parse_fit_print(res.stdout)
    if got is not None:
        return got
    return Projection(error=one_line(res.detail or f"llama-fit-params exited {res.returncode}")[:300])
