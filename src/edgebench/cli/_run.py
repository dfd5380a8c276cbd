"""`edgebench run`: the whole pipeline (edgebench.pipeline.run), rendered; resumes what is stored."""

from __future__ import annotations

import typer

from edgebench.cli._common import NO_WAIT, console, emit_json, hold_host, state
from edgebench.cli._context import render_context
from edgebench.cli._decide import render_ranking, render_routing
from edgebench.cli._progress import EventProgress
from edgebench.cli._quality import render_failures, render_score
from edgebench.cli._render import render_host, render_models, render_runtime
from edgebench.cli._sweep import render_outcome
from edgebench.models.default import DEFAULT_MODEL_NAME
from edgebench.pipeline.run import run_pipeline

__all__ = ["register"]


def run(
    no_bandwidth: bool = typer.Option(False, "--no-bandwidth", help="Skip the memory bandwidth test."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
    no_wait: bool = NO_WAIT,
) -> None:
    """Set up (build llama.cpp, install the default models) and measure everything not yet stored."""
    cfg, store = state.config, state.store
    hold_host(no_wait)
    with EventProgress() as emit:
        r = run_pipeline(cfg, store, bandwidth=not no_bandwidth, emit=emit)
    if json_:
        emit_json(r)
        return
    render_host(console, r.host)
    render_runtime(console, r.runtime)
    render_models(console, r.models)
    for s in r.sweeps:
        render_outcome(s, r.host.bandwidth_gbs)
    render_context(r.context, r.budget_mib)
    for sc in r.quality:
        render_score(sc)
    render_failures(r.quality_failed)
    render_ranking(r.ranking)
    render_routing(r.routing)
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in r.timings_s.items())
    console.print(f"time: {spent} (total {sum(r.timings_s.values()):.0f} s)", highlight=False)
    console.print(
        f"report: {r.report['html']}\nrouting: {r.report['routing']}\nstore: {r.store}", highlight=False
    )
    if any(m.name == DEFAULT_MODEL_NAME for m in r.models):
        console.print(
            "note: gemma-3-270m is a base model (no chat template): its quality ran in completion "
            "mode, and the -requant- variants were made with llama-quantize --allow-requantize.",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("run")(run)
