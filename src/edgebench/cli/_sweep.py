"""`edgebench sweep`: throughput over threads / KV type / flash-attn / ubatch / CPU sets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.progress import TaskID
from rich.table import Table

from edgebench.cli._args import int_list, out_file, positive, word_list
from edgebench.cli._common import (
    NO_WAIT,
    console,
    counting_progress,
    emit_json,
    err_console,
    hold_host,
    state,
)
from edgebench.cli._render import gib
from edgebench.config import Config
from edgebench.errors import ConfigError
from edgebench.host.probe import HostInfo, probe_host
from edgebench.measure.crosscheck import ServerCheck
from edgebench.measure.search import SweepOutcome, plan_size
from edgebench.measure.space import SweepSpace, default_space
from edgebench.measure.sweep import crosscheck_best, export_jsonl, recommended, sweep_model
from edgebench.measure.throughput import MeasureSettings, ThroughputResult
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import resolve_model
from edgebench.runtime.flags import KV_TYPES
from edgebench.runtime.locate import Runtime
from edgebench.setup import ensure_models, ensure_runtime
from edgebench.store import Store

__all__ = ["register", "render_outcome", "settings_for", "sweep_with_progress"]


def sweep(
    models: list[str] = typer.Argument(
        None, help="Registered names, paths or sha256 prefixes (default: configured models)."
    ),
    threads: str | None = typer.Option(None, "--threads", "-t", help="e.g. 2,4,6 (default: by host class)."),
    kv: str | None = typer.Option(None, "--kv", help="KV cache types, K=V, e.g. f16,q8_0,q4_0."),
    fa: str | None = typer.Option(None, "--fa", help="Flash attention: on,off,auto."),
    ubatch: str | None = typer.Option(None, "--ubatch", help="e.g. 128,512."),
    cpus: list[str] = typer.Option(
        [],
        "--cpus",
        help="CPU set to pin to: big, little, all, or a list like 4-7. Repeat, or separate with ';'.",
    ),
    depth: str | None = typer.Option(None, "--depth", "-d", help="Context depths, e.g. 0,4096."),
    n_prompt: int | None = typer.Option(None, "--n-prompt", "-p", min=1, help="Prefill test length (pp512)."),
    n_gen: int | None = typer.Option(None, "--n-gen", "-n", min=1, help="Decode test length (tg128)."),
    search: str = typer.Option("adaptive", "--search", help="adaptive (coordinate descent) or grid."),
    ci: float | None = typer.Option(None, "--ci", help="Target 95% CI half-width, fraction of the mean."),
    max_reps: int | None = typer.Option(None, "--max-reps", min=2, help="Cap on repetitions per point."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds per llama-bench process."),
    server_check: bool = typer.Option(
        True, "--server-check/--no-server-check", help="Re-measure the best config through llama-server."
    ),
    export: Path | None = typer.Option(None, "--export", help="Write llama-bench-compatible JSONL here."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
    no_wait: bool = NO_WAIT,
) -> None:
    """Measure prefill/decode t/s across runtime configs; crash-proof, resumable, adaptive."""
    cfg, store = state.config, state.store
    # Every argument is checked before the runtime is located (maybe built) and bandwidth measured.
    if search not in ("adaptive", "grid"):
        raise ConfigError(f"--search {search!r}: adaptive or grid")
    mode: Literal["adaptive", "grid"] = "grid" if search == "grid" else "adaptive"
    fas = word_list("--fa", fa, ("on", "off", "auto"))
    if ci is not None and not 0 < ci < 1:
        raise ConfigError(f"--ci {ci}: a fraction between 0 and 1, e.g. 0.03")
    positive("--timeout", timeout)
    out_file("--export", export)
    space = default_space(
        probe_host(),  # CPUs only; the measured bandwidth comes below, once the arguments are good
        cfg.sweep,
        threads=int_list("--threads", threads, minimum=1),
        kv=word_list("--kv", kv, KV_TYPES),
        fa=fas,  # type: ignore[arg-type]  # values checked above
        ubatch=int_list("--ubatch", ubatch, minimum=1),
        cpus=[c.strip() for spec in cpus for c in spec.split(";") if c.strip()] or None,
        depth=int_list("--depth", depth, minimum=0),
        n_prompt=n_prompt,
        n_gen=n_gen,
    )
    named = [resolve_model(store, m) for m in models or []]  # typer gives None for no arguments
    hold_host(no_wait)
    runtime = ensure_runtime(cfg)
    targets = named or ensure_models(cfg, store)
    host = probe_host(measure_bandwidth=True)
    store.put_host(host.fingerprint, host)
    store.put_runtime(runtime.build_id, runtime)
    settings = settings_for(cfg, host, ci=ci, max_reps=max_reps, timeout=timeout)
    outcomes = sweep_with_progress(
        store,
        runtime,
        host,
        targets,
        space,
        settings,
        mode,
        server_check=server_check,
        log_dir=cfg.data_dir / "logs",
    )
    if export is not None:
        try:
            n = export_jsonl([r for _, o, _ in outcomes for r in o.results], export)
        except OSError as exc:  # checked before the sweep; the disk can still fill up
            raise ConfigError(
                f"--export {export}: cannot write ({exc.strerror or exc}); the results are stored: "
                "re-run with another --export path to export them without measuring again"
            ) from None
        err_console.print(f"exported {n} llama-bench rows to {export}", highlight=False)
    if json_:
        emit_json(
            {
                "host": {"fingerprint": host.fingerprint, "bandwidth_gbs": host.bandwidth_gbs},
                "build_id": runtime.build_id,
                "space": space,
                "models": [
                    {
                        "model": m.name,
                        "sha256": m.sha256,
                        "search": o.search,
                        "grid_size": o.grid_size,
                        "measured": o.measured,
                        "best_pp": o.best_pp,
                        "best_tg": o.best_tg,
                        "best_threads_pp": o.best_threads_pp,
                        "best_threads_tg": o.best_threads_tg,
                        "recommended": recommended(o),
                        "server_check": c,
                        "results": o.results,
                    }
                    for m, o, c in outcomes
                ],
            }
        )
        return
    for m, o, c in outcomes:
        render_outcome(m, o, c, host.bandwidth_gbs)


Outcome = tuple[ModelInfo, SweepOutcome, ServerCheck | None]


def sweep_with_progress(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    targets: list[ModelInfo],
    space: SweepSpace,
    settings: MeasureSettings,
    mode: Literal["adaptive", "grid"],
    *,
    server_check: bool,
    log_dir: Path,
) -> list[Outcome]:
    """The sweep stage for every model, with one progress bar (and ETA) per model."""
    outcomes: list[Outcome] = []
    with counting_progress() as bar:
        for m in targets:
            task = bar.add_task(f"{m.name}", total=plan_size(space, mode))

            def _tick(r: ThroughputResult, task: TaskID = task, name: str = m.name) -> None:
                bar.update(task, advance=1, description=f"{name} {r.config.label()} {r.test}"[:70])

            out = sweep_model(store, runtime, host, m, space, settings, mode, on_result=_tick)
            bar.update(task, completed=bar.tasks[task].total or 0)
            check = None
            if server_check:
                bar.update(task, description=f"{m.name}: llama-server cross-check")
                check = crosscheck_best(
                    store, runtime, host, m, out, n_prompt=space.n_prompt, n_gen=space.n_gen, log_dir=log_dir
                )
            outcomes.append((m, out, check))
    return outcomes


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


def _ts(r: ThroughputResult) -> str:
    if r.mean_ts is None:
        return "—"
    return f"{r.mean_ts:.2f} ± {r.sd_ts or 0:.2f}"


def render_outcome(m: ModelInfo, o: SweepOutcome, c: ServerCheck | None, bw: float | None) -> None:
    t = Table(
        title=f"{m.name} · {gib(m.file_size)} · {m.params / 1e6:.0f} M params · {m.quant} "
        f"({o.search}: {o.measured} of {o.grid_size} grid runs; measured on this host)",
        title_justify="left",
    )
    right = ("t/s", "CI ±", "reps (procs)", "eff", "threads", "ubatch")
    for col in (
        "threads",
        "cpus",
        "kv",
        "fa",
        "ubatch",
        "test",
        "t/s",
        "CI ±",
        "reps (procs)",
        "eff",
        "status",
    ):
        t.add_column(col, justify="right" if col in right else "left")
    for r in sorted(o.results, key=lambda r: (r.depth, r.kind, -(r.mean_ts or 0))):
        p = r.point
        eff = f"{r.efficiency:.0%}" if r.efficiency is not None else ""
        status = r.status if r.status == "ok" else f"[red]{r.status}[/red]: {r.cause[:60]}"
        if r.drift:
            status += " [yellow]drift↓[/yellow]"
        t.add_row(
            str(p.threads),
            p.cpus.name,
            p.kv,
            p.fa,
            str(p.ubatch),
            r.test,
            _ts(r),
            f"{r.rel_ci:.1%}" if r.rel_ci is not None else "",
            f"{r.n} ({r.processes})",
            eff,
            status,
        )
    console.print(t)
    for b in (o.best_pp, o.best_tg):
        if b is None:
            continue
        tie = f"; tied within CI with {len(b.tied_with)}: {', '.join(b.tied_with[:3])}" if b.tied_with else ""
        console.print(f"best {b.kind}: {b.result.config.label()} → {_ts(b.result)} t/s{tie}", highlight=False)
    if o.best_pp and o.best_tg:
        console.print(
            f"best threads: prefill {o.best_threads_pp}, decode {o.best_threads_tg}", highlight=False
        )
    if bw:
        console.print(
            f"roofline: efficiency = tg × bytes read per token / {bw:.1f} GB/s measured bandwidth",
            highlight=False,
        )
    if c is not None:
        if c.status == "ok" and c.pp_mean and c.tg_mean:
            console.print(
                f"llama-server cross-check ({c.n_prompt} prompt / {c.n_gen} gen, startup {c.startup_s} s): "
                f"pp {c.pp_mean:.2f} t/s ({_ratio(c.pp_ratio)} of bench), "
                f"tg {c.tg_mean:.2f} t/s ({_ratio(c.tg_ratio)} of bench; server decodes at depth "
                f"{c.n_prompt})",
                highlight=False,
            )
        else:
            console.print(f"llama-server cross-check: {c.status}: {c.cause}", highlight=False)


def _ratio(x: float | None) -> str:
    return f"{x:.2f}×" if x is not None else "n/a"


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
