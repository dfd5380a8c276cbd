"""`plan --check`: the memory planner and llama.cpp's own projection against llama-server's
measured buffers, on a small grid per model; each row stored with its provenance."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.host.probe import HostInfo
from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import plan_memory
from edgebench.pipeline.events import Emit, TaskFinished, TaskProgress, TaskStarted, silent
from edgebench.runtime.fitparams import project_memory
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.memlog import read_memory_log
from edgebench.runtime.server import ServerFailed, ServerProcess
from edgebench.store import Provenance, Store

__all__ = ["BUFFERS", "STAGE", "VERSION", "PlanCheckRow", "check_plans"]

STAGE = "plan_check"
VERSION = 1  # record schema version (edgebench.stages)
BUFFERS = ("model", "kv", "compute", "rss")
Buffers = dict[str, float | None]  # BUFFERS → MiB (None: not known to that source)


class PlanCheckRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    ctx: int
    kv: str
    fa: str
    error: str | None = None  # llama-server did not start: nothing measured
    predicted: Buffers = {}  # edgebench's planner (PREDICTED)
    measured: Buffers = {}  # llama-server's own buffer lines; RSS sampled at load
    error_pct: Buffers = {}
    unverified: list[str] = []  # architecture features the planner has not been checked on
    llama_cpp_projection: Buffers = {}  # llama-fit-params (PROJECTED by llama.cpp)
    llama_cpp_projection_error: str | None = None
    llama_cpp_error_pct: Buffers = {}


def _pct(pred: float | None, meas: float | None) -> float | None:
    return 100 * (pred - meas) / meas if pred is not None and meas else None


def _grid(m: ModelInfo) -> list[RuntimeConfig]:
    out = []
    for ctx in (2048, 8192):
        if ctx > m.ctx_train:
            continue
        for kvt in ("f16", "q8_0"):
            for fa in ("on", "off"):
                if kvt != "f16" and fa == "off":
                    continue  # quantized V needs flash attention
                out.append(
                    RuntimeConfig(threads=2, ctx=ctx, cache_type_k=kvt, cache_type_v=kvt, flash_attn=fa)
                )
    return out


def _one(
    store: Store, runtime: Runtime, host: HostInfo, m: ModelInfo, cfg: RuntimeConfig, log_dir: Path
) -> PlanCheckRow:
    flags = tuple(host.cpu_flags) or None
    head = {"model": m.name, "ctx": cfg.ctx, "kv": cfg.cache_type_k, "fa": cfg.flash_attn}
    p = plan_memory(m, cfg, cpu_flags=flags)
    # RSS is sampled right after load, with nothing in the cache: predict that state.
    at_load = plan_memory(m, cfg, tokens_in_cache=1, cpu_flags=flags, checkpoints=0).host_total_mib
    proj = project_memory(runtime, m.path, cfg)
    log = log_dir / f"plan-check-{m.sha256[:12]}-{cfg.key()}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with ServerProcess(runtime, m.path, cfg, log, verbose=True) as srv:
            rss = srv.peak_rss_mib
    except ServerFailed as exc:
        return PlanCheckRow(**head, error=exc.detail)  # type: ignore[arg-type]
    dev = read_memory_log(log).devices.get("CPU")
    meas: Buffers = {
        "model": dev.model_mib if dev else None,
        "kv": dev.kv_mib if dev else None,
        "compute": dev.compute_mib if dev else None,
        "rss": rss,
    }
    pred: Buffers = {"model": p.model_mib, "kv": p.kv_mib, "compute": p.compute_mib, "rss": at_load}
    # llama.cpp's own projection: its "context" is KV + recurrent state
    llama: Buffers = {
        "model": proj.model_mib,
        "kv": None if proj.context_mib is None else proj.context_mib - p.recurrent_mib,
        "compute": proj.compute_mib,
        "rss": None,
    }
    row = PlanCheckRow(
        **head,  # type: ignore[arg-type]
        predicted=pred,
        measured=meas,
        error_pct={b: _pct(pred[b], mv) for b, mv in meas.items()},
        unverified=list(p.unverified),
        llama_cpp_projection=llama,
        llama_cpp_projection_error=proj.error,
        llama_cpp_error_pct={b: _pct(llama[b], mv) for b, mv in meas.items()},
    )
    prov = Provenance(build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=m.sha256)
    store.put(STAGE, prov, {"runtime": cfg.model_dump(mode="json")}, row, version=VERSION)
    return row


def check_plans(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    models: list[ModelInfo],
    *,
    log_dir: Path,
    emit: Emit = silent,
) -> list[PlanCheckRow]:
    """Start llama-server per grid point, read its own buffer lines, compare with both predictors."""
    rows = []
    for m in models:
        grid = _grid(m)
        task = f"plan-check:{m.sha256[:12]}"
        emit(TaskStarted(task=task, label=f"{m.name}: plan vs llama-server", total=len(grid)))
        for cfg in grid:
            rows.append(_one(store, runtime, host, m, cfg, log_dir))
            emit(TaskProgress(task=task))
        emit(TaskFinished(task=task))
    return rows
