"""`edgebench run`: the whole pipeline, resuming what is stored.

Today: set-up (llama.cpp present, models present) → doctor → throughput sweep (adaptive, with
the llama-server cross-check). Later stages (context, quality, rank, report) slot in here.
"""

from __future__ import annotations

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edgebench.cli._common import console, emit_json, err_console, state
from edgebench.cli._render import render_host, render_model, render_runtime
from edgebench.cli._sweep import render_outcome, settings_for, sweep_with_progress
from edgebench.host.probe import probe_host
from edgebench.measure.space import default_space
from edgebench.measure.sweep import recommended
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

    space = default_space(host, cfg.sweep)
    outcomes = sweep_with_progress(
        store,
        runtime,
        host,
        models,
        space,
        settings_for(cfg, host),
        "adaptive",
        server_check=True,
        log_dir=cfg.data_dir / "logs",
    )
    if json_:
        emit_json(
            {
                "host": host,
                "runtime": runtime,
                "models": models,
                "store": str(cfg.store_path),
                "sweeps": [
                    {
                        "model": m.name,
                        "best_pp": o.best_pp,
                        "best_tg": o.best_tg,
                        "best_threads_pp": o.best_threads_pp,
                        "best_threads_tg": o.best_threads_tg,
                        "recommended": recommended(o),
                        "server_check": c,
                        "measured": o.measured,
                        "results": o.results,
                    }
                    for m, o, c in outcomes
                ],
            }
        )
        return
    render_host(console, host)
    render_runtime(console, runtime)
    for m in models:
        render_model(console, m)
    for m, o, c in outcomes:
        render_outcome(m, o, c, host.bandwidth_gbs)
    console.print(f"stored in {cfg.store_path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
