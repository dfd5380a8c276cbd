"""The sweep stage for several models: search, cross-check the winner, report one typed record each."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.config import Config
from edgebench.host.probe import HostInfo
from edgebench.measure.crosscheck import ServerCheck
from edgebench.measure.gate import NO_SENSORS, GateSettings, ThermalGate
from edgebench.measure.race import RaceRound, RaceSettings
from edgebench.measure.search import Best, Search, SweepOutcome, plan_size
from edgebench.measure.serving import serving_runtime
from edgebench.measure.space import SweepSpace
from edgebench.measure.sweep import crosscheck_best, sweep_model
from edgebench.measure.throughput import MeasureSettings, ThroughputResult
from edgebench.models.gguf import ModelInfo
from edgebench.pipeline.events import Emit, Notice, TaskFinished, TaskProgress, TaskStarted, silent
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Store

__all__ = ["SweepReport", "decided_space", "race_for", "settings_for", "sweep_models"]


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
    best_pp: Best | None  # .race: the interleaved race that decided it, with its paired evidence
    best_tg: Best | None
    best_threads_pp: int | None
    best_threads_tg: int | None
    recommended: RuntimeConfig | None  # the serving spec's runtime, before the context probe
    server_check: ServerCheck | None
    results: list[ThroughputResult]
    gated: bool  # processes waited for a cool host (False: no sensors, or gating off)
    throttled_rows: int  # rows with a process that started hot or clock-capped anyway
    contended_rows: int = 0  # rows with a process that shared the cores its threads needed

    @classmethod
    def of(cls, m: ModelInfo, o: SweepOutcome, check: ServerCheck | None, gated: bool) -> SweepReport:
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
            gated=gated,
            throttled_rows=sum(r.throttled for r in o.results),
            contended_rows=sum(r.contended for r in o.results),
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
        gate=GateSettings(
            enabled=cfg.sweep.gate,
            max_temp_c=cfg.sweep.gate_temp_c,
            max_wait_s=cfg.sweep.gate_wait_s,
            clock_tolerance=cfg.sweep.gate_clock_tolerance,
        ),
    )


def decided_space(space: SweepSpace, base: SweepReport) -> SweepSpace | None:
    """The points `base`'s sweep decided on (its pp and tg winners), as a space of their own: a
    requantized copy of a model is measured where its original was decided, as a user compares
    quantizations with llama-bench (`-m a,b,c` at one set of flags), rather than searched and
    raced again, at depth 0 only (the depth curve is the base's). None when the base decided
    nothing."""
    wins = [b.result.point for b in (base.best_pp, base.best_tg) if b is not None]
    serving = base.best_tg or base.best_pp  # decode's winner sets the KV type, as served
    if serving is None:
        return None
    tg = serving.result.point
    return space.model_copy(
        update={
            "threads": sorted({p.threads for p in wins}),
            "kv": [tg.kv],
            "fa": [tg.fa],
            "ubatch": sorted({p.ubatch for p in wins}),
            "cpus": [tg.cpus],
            "depth": [0],
        }
    )


def race_for(cfg: Config, *, light: bool = False) -> RaceSettings | None:
    """The finalists' race from [sweep] (None: racing is off, the search alone decides);
    `light`: capped by [run]'s race_size / race_max_rounds, so a fresh run finishes in minutes."""
    s = cfg.sweep
    if not s.race:
        return None
    size, rounds = s.race_size, s.race_max_rounds
    if light:
        size, rounds = min(size, cfg.run.race_size), min(rounds, cfg.run.race_max_rounds)
    return RaceSettings(
        size=size,
        margin=s.race_margin,
        min_rounds=min(s.race_min_rounds, rounds),
        max_rounds=rounds,
        reps=s.race_reps,
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
    race: RaceSettings | None = None,
    sysroot: Path = Path("/"),
) -> list[SweepReport]:
    """The sweep stage for every model (one progress task each), then the server cross-check."""
    reports: list[SweepReport] = []
    gated = settings.gate.enabled and ThermalGate(sysroot, settings.gate).sensors()
    if settings.gate.enabled and not gated and targets:
        emit(Notice(text=NO_SENSORS))  # once per sweep, not once per process
    for m in targets:
        task = f"sweep:{m.sha256[:12]}"
        emit(TaskStarted(task=task, label=m.name, total=plan_size(space, mode, race)))

        def _tick(r: ThroughputResult, task: str = task, name: str = m.name) -> None:
            emit(TaskProgress(task=task, label=f"{name} {r.config.label()} {r.test}"[:70]))

        def _round(rd: RaceRound, task: str = task, name: str = m.name) -> None:
            emit(TaskProgress(task=task, label=f"{name} race {rd.test} round {rd.round}"[:70]))

        out = sweep_model(
            store,
            runtime,
            host,
            m,
            space,
            settings,
            mode,
            race=race,
            on_result=_tick,
            on_round=_round,
            sysroot=sysroot,
        )
        check = None
        if server_check:
            emit(TaskProgress(task=task, advance=0, label=f"{m.name}: llama-server cross-check"))
            check = crosscheck_best(
                store, runtime, host, m, out, n_prompt=space.n_prompt, n_gen=space.n_gen, log_dir=log_dir
            )
        emit(TaskFinished(task=task))
        reports.append(SweepReport.of(m, out, check, gated))
    return reports
