"""A recipe applied and checked by measurement, stored as a result row of the quantized model:
size against the preview, KLD / top-token agreement / Δppl against the source, RAM at the target
context (llama-server loaded and filled), llama-bench pp and tg."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgebench.host.probe import HostInfo
from edgebench.measure.context import probe_context
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import add_model
from edgebench.quant.fit import ram_plan
from edgebench.quant.measure import Evaluator, Measured
from edgebench.quant.preview import FilePlan
from edgebench.runtime.bench import run_bench
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Provenance, Store

__all__ = ["STAGE", "VERSION", "QuantRow", "verify_recipe"]

STAGE = "quant"
VERSION = 1


class QuantRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    recipe: dict[str, Any]
    model: str  # the registered name of the quantized file
    path: str
    source: str
    source_sha256: str
    sha256: str
    build_id: str
    argv: list[str]
    predicted_bytes: int
    file_bytes: int
    size_error_pct: float
    fallbacks: int
    bpw: float
    kld_ctx: int
    mean_kld: float
    mean_kld_pm: float
    same_top_pct: float | None
    same_top_pm: float | None
    dppl_pct: float
    ctx: int  # the target context
    kv: str
    ram_predicted_mib: float
    ram_measured_mib: float | None = None  # peak RSS, llama-server loaded and filled at ctx
    fits: bool | None = None  # that trial passed inside the budget
    fit_cause: str = ""
    budget_mib: float | None = None
    pp_ts: float | None = None
    pp_sd: float | None = None
    tg_ts: float | None = None
    tg_sd: float | None = None
    notes: list[str] = []


def verify_recipe(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    source: ModelInfo,
    plan: FilePlan,
    evaluator: Evaluator,
    cfg: RuntimeConfig,
    *,
    budget_mib: float,
    log_dir: Path,
    name: str | None = None,
    speed: bool = True,
    fit: bool = True,
    say: Callable[[str], None] = lambda _s: None,
) -> QuantRow:
    say(f"{plan.recipe.name}: quantizing and measuring KLD against {source.name}")
    m: Measured = evaluator.measure(plan)
    info = add_model(store, Path(m.applied.path), name or f"{source.name}-{plan.recipe.name}", replace=True)
    notes = list(plan.notes)
    predicted = ram_plan(source, plan, cfg, cpu_flags=tuple(host.cpu_flags) or None).host_total_mib
    row: dict[str, Any] = {}
    if fit:
        say(f"{plan.recipe.name}: llama-server at context {cfg.ctx}, filled")
        probe = probe_context(
            store, runtime, host, info, cfg, budget_mib=budget_mib, log_dir=log_dir, ctx_list=[cfg.ctx]
        )
        t = probe.trials[-1] if probe.trials else None
        if t is not None:
            row.update(ram_measured_mib=round(t.peak_rss_mib, 1), fits=t.ok, fit_cause=t.cause)
    if speed:
        say(f"{plan.recipe.name}: llama-bench pp512, tg32")
        for key, test in (
            ("pp", BenchTest(n_prompt=512, reps=3)),
            ("tg", BenchTest(n_prompt=0, n_gen=32, reps=3)),
        ):
            out = run_bench(runtime, info.path, cfg, test)
            if out.runs:
                row[f"{key}_ts"], row[f"{key}_sd"] = out.runs[0].avg_ts, out.runs[0].stddev_ts
            else:
                notes.append(f"{key}: llama-bench {out.status.value}: {out.detail}")
    k = m.kld
    rec = QuantRow(
        recipe=plan.recipe.model_dump(mode="json"),
        model=info.name,
        path=info.path,
        source=source.path,
        source_sha256=source.sha256,
        sha256=m.applied.sha256,
        build_id=runtime.build_id,
        argv=list(m.applied.argv),
        predicted_bytes=m.applied.predicted_bytes,
        file_bytes=m.applied.file_bytes,
        size_error_pct=round(m.applied.size_error_pct, 4),
        fallbacks=m.applied.fallbacks,
        bpw=info.bpw,
        kld_ctx=evaluator.ctx,
        mean_kld=k.mean_kld,
        mean_kld_pm=k.mean_kld_pm,
        same_top_pct=k.same_top_pct,
        same_top_pm=k.same_top_pm,
        dppl_pct=round(k.dppl_pct, 3),
        ctx=cfg.ctx,
        kv=cfg.cache_type_k
        if cfg.cache_type_k == cfg.cache_type_v
        else f"{cfg.cache_type_k}/{cfg.cache_type_v}",
        ram_predicted_mib=round(predicted, 1),
        budget_mib=budget_mib,
        notes=notes,
        **row,
    )
    prov = Provenance(
        build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=m.applied.sha256
    )
    params = {"recipe": rec.recipe, "source_sha256": source.sha256, "runtime": cfg.model_dump(mode="json"),
              "kld_ctx": evaluator.ctx}  # fmt: skip
    store.put(STAGE, prov, params, rec, version=VERSION)
    return rec
