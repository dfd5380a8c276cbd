"""The sweep stage for several models: search, cross-check the winner, report one typed record each."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.config import Config
from edgebench.host.probe import HostInfo
from edgebench.measure.crosscheck import ServerCheck
from edgebench.measure.search import Best, Search, SweepOutcome, plan_size
from edgebench.measure.serving import serving_runtime
from edgebench.measure.space import SweepSpace
from edgebench.measure.sweep import crosscheck_best, sweep_model
from edgebench.measure.throughput import MeasureSettings, ThroughputResult
from edgebench.models.gguf import ModelInfo
from edgebench.pipeline.events import Emit, TaskFinished, TaskProgress, TaskStarted, silent
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Store

__all__ = ["SweepReport", "settings_for", "sweep_models"]


class SweepReport(BaseModel):
    """One model's sweep: what the table shows and `--json` prints (the same record)."""

    model_config = ConfigDict(frozen=True)

    model: str
    sha256: str
    file_size: int
    params: int
    quant: str
    search: Search
    grid_size: int
    measured: int
    best_pp: Best | None
    best_tg: Best | None
    best_threads_pp: int | None
    best_threads_tg: int | None
    recommended: RuntimeConfig | None  # the serving spec's runtime, before the context probe
    server_check: ServerCheck | None
    results: list[ThroughputResult]

    @classmethod
    def of(cls, m: ModelInfo, o: SweepOutcome, check: ServerCheck | None) -> SweepReport:
        rec = None
        if o.best_tg is not None:
            pp = o.best_pp.result if o.best_pp else None
            rec = serving_runtime(o.best_tg.result, pp, RuntimeConfig())
        return cls(
            model=m.name,
            sha256=m.sha256,
            file_size=m.file_size,
            params=m.params,
            quant=m.quant,
            search=o.search,
            grid_size=o.grid_size,
            measured=o.measured,
            best_pp=o.best_pp,
            best_tg=o.best_tg,
            best_threads_pp=o.best_threads_pp,
            best_threads_tg=o.best_threads_tg,
            recommended=rec,
            server_check=check,
            results=o.results,
        )


def settings_for(
    cfg: Config,
    host: HostInfo,
    *,
    ci: float | None = None,
    max_reps: int | None = None,
    timeout: float | None = None,
) -> MeasureSettings:
    # The RSS watchdog stops a config before the kernel OOM killer picks a victim for us.
    return MeasureSettings(
        ci_target=ci or cfg.sweep.ci_target,
        max_reps=max(max_reps or cfg.sweep.max_reps, cfg.sweep.min_processes),
        reps_per_process=cfg.sweep.reps_per_process,
        min_processes=cfg.sweep.min_processes,
        timeout_s=timeout or cfg.sweep.timeout_s,
        rss_limit_mib=max(256.0, cfg.budgets.usable_mib(host.ram_total_mib)),
    )


def sweep_models(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    targets: list[ModelInfo],
    space: SweepSpace,
    settings: MeasureSettings,
    mode: Search,
    *,
    server_check: bool,
    log_dir: Path,
    emit: Emit = silent,
) -> list[SweepReport]:
    """The sweep stage for every model (one progress task each), then the server cross-check."""
    reports: list[SweepReport] = []
    for m in targets:
        task = f"sweep:{m.sha256[:12]}"
        emit(TaskStarted(task=task, label=m.name, total=plan_size(space, mode)))

        def _tick(r: ThroughputResult, task: str = task, name: str = m.name) -> None:
            emit(TaskProgress(task=task, label=f"{name} {r.config.label()} {r.test}"[:70]))

        out = sweep_model(store, runtime, host, m, space, settings, mode, on_result=_tick)
        check = None
        if server_check:
            emit(TaskProgress(task=task, advance=0, label=f"{m.name}: llama-server cross-check"))
            check = crosscheck_best(
                store, runtime, host, m, out, n_prompt=space.n_prompt, n_gen=space.n_gen, log_dir=log_dir
            )
        emit(TaskFinished(task=task))
        reports.append(SweepReport.of(m, out, check))
    return reports
