"""`edgebench run`: the whole pipeline, resuming what is stored.

At this stage the pipeline is: set-up (llama.cpp present, models present) → doctor → a short
llama-bench pass per model. Later stages (sweep, context, quality, rank, report) slot in here.
"""

from __future__ import annotations

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgebench.cli._common import console, emit_json, err_console, state
from edgebench.cli._render import render_host, render_model, render_runtime
from edgebench.host.probe import probe_host
from edgebench.measure.smoke import SmokeResult, smoke
from edgebench.setup import ensure_models, ensure_runtime

__all__ = ["register"]


def run(
    no_bandwidth: bool = typer.Option(False, "--no-bandwidth", help="Skip the memory bandwidth test."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set up (build llama.cpp, install the default model) and measure everything not yet stored."""
    cfg, store = state.config, state.store
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("llama.cpp: locating", total=100)
        runtime = ensure_runtime(
            cfg,
            on_progress=lambda pct, what: bar.update(
                task, completed=pct, description=f"llama.cpp: building ({what[-50:]})"
            ),
        )
        bar.update(task, completed=100, description="models: assembling / reading metadata")
        models = ensure_models(cfg, store)
        bar.update(task, description="host: probing (bandwidth test)")
        host = probe_host(measure_bandwidth=not no_bandwidth)
    store.put_host(host.fingerprint, host)
    store.put_runtime(runtime.build_id, runtime)

    results: list[SmokeResult] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("measuring", total=len(models))
        for m in models:
            bar.update(task, description=f"llama-bench {m.name}")
            results.extend(smoke(store, runtime, host, m))
            bar.advance(task)

    if json_:
        emit_json(
            {
                "host": host,
                "runtime": runtime,
                "models": models,
                "measured": results,
                "store": str(cfg.store_path),
            }
        )
        return
    render_host(console, host)
    render_runtime(console, runtime)
    for m in models:
        render_model(console, m)
    _render_results(results)
    console.print(f"stored in {cfg.store_path}", highlight=False)


def _render_results(results: list[SmokeResult]) -> None:
    t = Table(title="measured (llama-bench, measured on this host)", title_justify="left")
    for col in ("model", "config", "test", "t/s", "peak RSS", "status"):
        t.add_column(col)
    for r in results:
        ts = f"{r.mean_ts:.2f} ± {r.sd_ts:.2f}" if r.mean_ts is not None and r.sd_ts is not None else "—"
        status = r.status + (" (stored earlier)" if r.resumed else "")
        if r.status != "ok":
            status += f": {r.detail}"
        t.add_row(r.model, r.config.label(), r.test, ts, f"{r.peak_rss_mib:.0f} MiB", status)
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
