"""`edgebench run`: the whole pipeline, resuming anything already stored.

set-up (llama.cpp, models + requantized variants of the default, host) → plan → sweep → context
→ quality → decide + report. Each stage reads what the earlier ones stored; the run's own
settings (`[run]` in edgebench.toml) are lighter than the stand-alone commands' so a fresh machine
gets a complete report in minutes. Where the time went is part of the record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel, ConfigDict

from edgebench.config import Config
from edgebench.decide.rank import Ranking
from edgebench.decide.routing import Routing
from edgebench.host.probe import HostInfo, probe_host
from edgebench.measure.context import ContextProbe, candidates
from edgebench.measure.serving import host_default_config
from edgebench.measure.space import default_space
from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import MemoryPlan, plan_memory
from edgebench.models.variants import requantized_variants
from edgebench.pipeline.context import probe_models
from edgebench.pipeline.decide import decide
from edgebench.pipeline.events import (
    Emit,
    Notice,
    StageFinished,
    StageStarted,
    TaskFinished,
    TaskProgress,
    TaskStarted,
    silent,
)
from edgebench.pipeline.quality import StartFailure, run_quality
from edgebench.pipeline.sweep import SweepReport, decided_space, race_for, settings_for, sweep_models
from edgebench.quality import sandbox
from edgebench.quality.runner import QualitySettings
from edgebench.quality.score import SuiteScore
from edgebench.quality.suite import load_suite
from edgebench.runtime.locate import Runtime
from edgebench.setup import ensure_models, ensure_runtime
from edgebench.store import Store

__all__ = ["RunReport", "run_pipeline"]


class RunReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: HostInfo
    runtime: Runtime
    models: list[ModelInfo]
    store: str
    plans: dict[str, MemoryPlan]
    timings_s: dict[str, float]
    sweeps: list[SweepReport]
    context: list[ContextProbe]
    budget_mib: float
    quality: list[SuiteScore]
    quality_failed: list[StartFailure]
    ranking: Ranking
    routing: Routing
    report: dict[str, str]  # html, markdown, routing


def run_pipeline(cfg: Config, store: Store, *, bandwidth: bool = True, emit: Emit = silent) -> RunReport:
    rc = cfg.run
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        emit(StageStarted(stage=name))
        t0 = time.monotonic()
        yield
        timings[name] = round(timings.get(name, 0.0) + time.monotonic() - t0, 1)
        emit(StageFinished(stage=name, seconds=timings[name]))

    with stage("setup"):
        emit(TaskStarted(task="setup", label="llama.cpp: locating", total=100))
        runtime = ensure_runtime(
            cfg,
            on_progress=lambda pct, what: emit(
                TaskProgress(task="setup", completed=pct, label=f"llama.cpp: building ({what[-50:]})")
            ),
        )
        emit(TaskProgress(task="setup", completed=100, label="models: assembling / reading metadata"))
        models = ensure_models(cfg, store)
        variants: list[ModelInfo] = []
        if not cfg.models and rc.requantized_variants:
            emit(TaskProgress(task="setup", advance=0, label="models: requantized variants (llama-quantize)"))
            variants = requantized_variants(store, runtime, models[0], cfg.models_dir)
        emit(TaskProgress(task="setup", advance=0, label="host: probing (bandwidth test)"))
        host = probe_host(measure_bandwidth=bandwidth)
        emit(TaskFinished(task="setup"))
    store.put_host(host.fingerprint, host)
    store.put_runtime(runtime.build_id, runtime)

    with stage("plan"):
        plans = {
            m.name: plan_memory(
                m, host_default_config(host).model_copy(update={"ctx": min(rc.context_max, m.ctx_train)})
            )
            for m in [*models, *variants]
        }
    with stage("sweep"):
        space = default_space(
            host,
            cfg.sweep,
            kv=rc.kv,
            fa=rc.flash_attn,
            n_prompt=rc.n_prompt,
            n_gen=rc.n_gen,
            depth=rc.depths,
            depth_kinds=("tg",),  # decode vs depth is what the report plots from a run
        )
        settings = settings_for(cfg, host, ci=rc.ci_target, max_reps=rc.max_reps)
        sweeps = sweep_models(
            store,
            runtime,
            host,
            models,
            space,
            settings,
            "adaptive",
            server_check=True,
            log_dir=cfg.data_dir / "logs",
            emit=emit,
            race=race_for(cfg, light=True),
        )
        if variants and (at := decided_space(space, sweeps[0])) is not None:
            emit(
                Notice(
                    text=f"{', '.join(v.name for v in variants)}: measured at {models[0].name}'s "
                    f"decided settings (threads {at.threads}, kv {at.kv[0]}, fa {at.fa[0]}), not searched"
                )
            )
            sweeps += sweep_models(
                store,
                runtime,
                host,
                variants,
                at,
                settings,
                "grid",
                server_check=False,
                log_dir=cfg.data_dir / "logs",
                emit=emit,
            )
        models += variants
    budget = cfg.budgets.usable_mib(host.ram_total_mib)
    with stage("context"):

        def contexts(m: ModelInfo) -> list[int]:
            return [c for c in candidates(m.ctx_train) if c <= rc.context_max] or [min(2048, m.ctx_train)]

        probes = probe_models(
            store,
            runtime,
            host,
            models,
            budget_mib=budget,
            swap_limit_mib=float(cfg.budgets.swap_growth_mib),
            n_decode=16,
            log_dir=cfg.data_dir / "logs",
            kv=rc.context_kv,  # None: the serving spec's KV type (what will be served)
            contexts=contexts,
            emit=emit,
        )
    with stage("quality"):
        suite = load_suite(rc.suite, rc.suite_dirs)
        sandbox.allow_unsandboxed(cfg.quality.allow_unsandboxed)
        qs = QualitySettings(samples=rc.samples, variants=rc.variants)
        quality = run_quality(cfg, store, host, suite, qs, runtime=runtime, models=models, emit=emit)
        for f in quality.failed:
            emit(Notice(text=f"quality: llama-server for {f.model} did not start ({f.cause}: {f.detail})"))
    with stage("decide+report"):
        d = decide(cfg, store, host, suite.name, runtime=runtime)
    assert d.html is not None and d.markdown is not None
    return RunReport(
        host=host,
        runtime=runtime,
        models=models,
        store=str(cfg.store_path),
        plans=plans,
        timings_s=timings,
        sweeps=sweeps,
        context=probes,
        budget_mib=budget,
        quality=quality.scores,
        quality_failed=quality.failed,
        ranking=d.ranking,
        routing=d.routing,
        report={"html": str(d.html), "markdown": str(d.markdown), "routing": str(d.routing_json)},
    )
