"""`edgebench sweep`: throughput over threads / KV type / flash-attn / ubatch / CPU sets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape
from rich.table import Table

from edgebench.cli._args import int_list, out_file, positive, rpc_endpoints, split_weights, word_list
from edgebench.cli._common import NO_WAIT, console, emit_json, err_console, hold_host, state
from edgebench.cli._progress import EventProgress
from edgebench.cli._render import gib
from edgebench.errors import ConfigError
from edgebench.host.busy import busy_cores, spare_cores
from edgebench.host.probe import probe_host
from edgebench.measure.race import RaceOutcome
from edgebench.measure.space import default_space
from edgebench.measure.sweep import export_jsonl
from edgebench.measure.throughput import ThroughputResult
from edgebench.models.registry import resolve_model
from edgebench.pipeline.sweep import SweepReport, race_for, settings_for, sweep_models
from edgebench.runtime.flags import KV_TYPES
from edgebench.setup import ensure_models, ensure_runtime
from edgebench.textsafe import one_line

__all__ = ["register", "render_outcome"]


def busy_notice(threads: int) -> None:
    """Say so when other processes hold cores the sweep's threads need: ggml's threads spin at
    barriers, so such configs measure the neighbour, not themselves."""
    busy = busy_cores(0.5)
    spare = spare_cores(busy)
    if busy is not None and threads > spare:
        err_console.print(
            f"host busy: other processes keep {busy:.1f} cores busy; configs above {spare} "
            "thread(s) will measure that load, not the config",
            highlight=False,
        )


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
    rpc: str | None = typer.Option(
        None, "--rpc", help="RPC workers host:port,… (edgebench worker): every layer split over them."
    ),
    tensor_split: str | None = typer.Option(
        None, "--tensor-split", help="One weight per RPC worker, e.g. 1,1."
    ),
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
        rpc=rpc_endpoints(rpc),
        tensor_split=split_weights(tensor_split, rpc),
    )
    named = [resolve_model(store, m) for m in models or []]  # typer gives None for no arguments
    hold_host(no_wait)
    runtime = ensure_runtime(cfg)
    targets = named or ensure_models(cfg, store)
    host = probe_host(measure_bandwidth=True)
    busy_notice(max(space.threads))
    store.put_host(host.fingerprint, host)
    store.put_runtime(runtime.build_id, runtime)
    settings = settings_for(cfg, host, ci=ci, max_reps=max_reps, timeout=timeout)
    with EventProgress() as emit:
        reports = sweep_models(
            store,
            runtime,
            host,
            targets,
            space,
            settings,
            mode,
            server_check=server_check,
            log_dir=cfg.data_dir / "logs",
            emit=emit,
            race=race_for(cfg),
        )
    if export is not None:
        try:
            n = export_jsonl([r for rep in reports for r in rep.results], export)
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
                "models": reports,  # the same typed records the tables below are drawn from
            }
        )
        return
    for rep in reports:
        render_outcome(rep, host.bandwidth_gbs)


def _ts(r: ThroughputResult) -> str:
    if r.mean_ts is None:
        return "—"
    return f"{r.mean_ts:.2f} ± {r.sd_ts or 0:.2f}"


def render_outcome(o: SweepReport, bw: float | None) -> None:
    c = o.server_check
    t = Table(
        title=f"{o.model} · {gib(o.file_size)} · {o.params / 1e6:.0f} M params · {o.quant} "
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
        status = r.status if r.status == "ok" else f"[red]{r.status}[/red]: {escape(one_line(r.cause, 60))}"
        if r.drift:
            status += " [yellow]drift↓[/yellow]"
        if r.throttled:
            status += " [yellow]throttled[/yellow]"
        if r.contended:
            status += " [yellow]contended[/yellow]"
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
        if b.race is not None:
            _race_lines(b.race)
    if o.best_pp and o.best_tg:
        console.print(
            f"best threads: prefill {o.best_threads_pp}, decode {o.best_threads_tg}", highlight=False
        )
    if not o.gated:
        console.print("thermal gating: off or no sensors on this host (processes not gated)", highlight=False)
    elif o.throttled_rows:
        console.print(
            f"thermal gating: {o.throttled_rows} rows had a process start hot or clock-capped "
            "after the wait ran out (flagged 'throttled')",
            highlight=False,
        )
    if o.contended_rows:
        console.print(
            f"busy host: {o.contended_rows} rows had a process share the cores its threads needed with "
            "other processes (flagged 'contended': the figures are this busy host's, not the config's alone)",
            highlight=False,
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


_VERDICT = {"a better": "better beyond noise", "b better": "worse beyond noise", "tie": "within noise"}


def _race_lines(race: RaceOutcome) -> None:
    if race.decision == "sole":
        console.print(f"  race: not needed ({race.rule})", highlight=False)
        return
    console.print(
        f"  race {race.test}: {len(race.labels)} finalists interleaved over {race.rounds} rounds → "
        f"{race.decision}: {escape(race.rule)}",
        highlight=False,
    )
    means = ", ".join(f"{k} {v:.2f}" for k, v in race.race_means.items())
    console.print(f"    race means (t/s; the decision is paired, not these): {means}", highlight=False)
    for c in race.comparisons:
        if c.mean_diff is None:
            console.print(f"    vs {c.b}: no comparable rounds ({c.excluded} excluded)", highlight=False)
            continue
        finite = c.ci_low is not None and c.ci_high is not None
        ci = f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]" if finite else "n/a"
        rel = f" ({c.rel_diff:+.1%})" if c.rel_diff is not None else ""
        excl = f", {c.excluded} excluded" if c.excluded else ""
        console.print(
            f"    vs {c.b}: {c.mean_diff:+.2f} t/s{rel}, paired 95 % CI {ci} over {c.rounds} rounds{excl}: "
            f"{_VERDICT[c.verdict]}",
            highlight=False,
        )
    if race.search_pick != race.winner_label:
        console.print(f"    the search alone picked {race.search_pick}", highlight=False)
    if race.not_raced:
        console.print(f"    close but not raced (cap): {', '.join(race.not_raced[:3])}", highlight=False)
    fate = race.default_fate()
    if fate is not None:
        console.print(f"    the untuned default {race.default} raced too: {fate}", highlight=False)
    if race.throttled_processes:
        console.print(f"    {race.throttled_processes} race processes started throttled", highlight=False)
    if race.contended_processes:
        console.print(
            f"    {race.contended_processes} race processes shared their cores with other processes",
            highlight=False,
        )


def _ratio(x: float | None) -> str:
    return f"{x:.2f}×" if x is not None else "n/a"


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
