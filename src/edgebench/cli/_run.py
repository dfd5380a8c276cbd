"""`edgebench run`: the whole pipeline, resuming anything already stored.

doctor → models (+ requantized variants of the default) → plan → sweep → context → quality →
rank → route → report. Each stage reads what the earlier ones stored; the run's own settings
(`[run]` in edgebench.toml) are lighter than the stand-alone commands' so a fresh machine gets a
complete report in minutes. Where the time went is printed at the end (and in --json).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edgebench.cli._common import NO_WAIT, console, emit_json, err_console, hold_host, state
from edgebench.cli._context import render_context
from edgebench.cli._decide import decide_all, render_ranking, render_routing
from edgebench.cli._quality import managed_target, render_score, run_with_progress
from edgebench.cli._render import render_host, render_models, render_runtime
from edgebench.cli._sweep import render_outcome, settings_for, sweep_with_progress
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.measure.context import candidates, probe_context
from edgebench.measure.space import default_space
from edgebench.measure.sweep import host_default_config, recommended, serving_config
from edgebench.models.default import DEFAULT_MODEL_NAME
from edgebench.models.memory import plan_memory
from edgebench.models.variants import requantized_variants
from edgebench.quality import sandbox
from edgebench.quality.runner import QualitySettings
from edgebench.quality.score import score
from edgebench.quality.suite import load_suite
from edgebench.setup import ensure_models, ensure_runtime

__all__ = ["register"]


def run(
    no_bandwidth: bool = typer.Option(False, "--no-bandwidth", help="Skip the memory bandwidth test."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
    no_wait: bool = NO_WAIT,
) -> None:
    """Set up (build llama.cpp, install the default model) and measure everything not yet stored."""
    cfg, store = state.config, state.store
    rc = cfg.run
    hold_host(no_wait)
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        timings[name] = round(timings.get(name, 0.0) + time.monotonic() - t0, 1)

    with (
        stage("setup"),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("llama.cpp: locating", total=100)
        runtime = ensure_runtime(
            cfg,
            on_progress=lambda pct, what: bar.update(
                task, completed=pct, description=f"llama.cpp: building ({what[-50:]})"
            ),
        )
        bar.update(task, completed=100, description="models: assembling / reading metadata")
        models = ensure_models(cfg, store)
        if not cfg.models and rc.requantized_variants:
            bar.update(task, description="models: requantized Q4_0 / Q8_0 variants (llama-quantize)")
            models += requantized_variants(store, runtime, models[0], cfg.models_dir)
        bar.update(task, description="host: probing (bandwidth test)")
        host = probe_host(measure_bandwidth=not no_bandwidth)
    store.put_host(host.fingerprint, host)
    store.put_runtime(runtime.build_id, runtime)

    with stage("plan"):
        plans = {
            m.name: plan_memory(
                m, host_default_config(host).model_copy(update={"ctx": min(rc.context_max, m.ctx_train)})
            )
            for m in models
        }
    with stage("sweep"):
        space = default_space(
            host, cfg.sweep, kv=rc.kv, fa=rc.flash_attn, n_prompt=rc.n_prompt, n_gen=rc.n_gen
        )
        settings = settings_for(cfg, host, ci=rc.ci_target, max_reps=rc.max_reps)
        outcomes = sweep_with_progress(
            store,
            runtime,
            host,
            models,
            space,
            settings,
            "adaptive",
            server_check=True,
            log_dir=cfg.data_dir / "logs",
        )
    budget = cfg.budgets.usable_mib(host.ram_total_mib)
    probes = []
    with stage("context"):
        for m, _, _ in outcomes:
            base = serving_config(store, m, host).model_copy(
                update={"cache_type_k": rc.context_kv, "cache_type_v": rc.context_kv, "flash_attn": "on"}
            )
            ctxs = [c for c in candidates(m.ctx_train) if c <= rc.context_max] or [min(2048, m.ctx_train)]
            err_console.print(f"context probe: {m.name} (contexts {ctxs})", highlight=False)
            probes.append(
                (
                    m,
                    probe_context(
                        store,
                        runtime,
                        host,
                        m,
                        base,
                        budget_mib=budget,
                        swap_limit_mib=float(cfg.budgets.swap_growth_mib),
                        n_decode=16,
                        log_dir=cfg.data_dir / "logs",
                        ctx_list=ctxs,
                    ),
                )
            )
    scores = []
    with stage("quality"):
        suite = load_suite(rc.suite, rc.suite_dirs)
        qs = QualitySettings(samples=rc.samples, variants=rc.variants)
        sandbox.allow_unsandboxed(cfg.quality.allow_unsandboxed)
        for m in models:
            with ExitStack() as stack:
                try:
                    be, target = managed_target(stack, cfg, store, host, runtime, m, 300.0, 60.0)
                except ConfigError as exc:  # a server that will not start is a finding, not a crash
                    err_console.print(f"quality: {exc}", highlight=False)
                    continue
                scores.append(score(run_with_progress(store, be, target, suite, qs)))
    with stage("decide+report"):
        _, ranking, routing, routing_json, md, html = decide_all(cfg, store, host, suite.name, runtime)
    if json_:
        emit_json(
            {
                "host": host,
                "runtime": runtime,
                "models": models,
                "store": str(cfg.store_path),
                "plans": plans,
                "timings_s": timings,
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
                "context": [p for _, p in probes],
                "quality": scores,
                "ranking": ranking,
                "routing": routing,
                "report": {"html": str(html), "markdown": str(md), "routing": str(routing_json)},
            }
        )
        return
    render_host(console, host)
    render_runtime(console, runtime)
    render_models(console, models)
    for m, o, c in outcomes:
        render_outcome(m, o, c, host.bandwidth_gbs)
    render_context(probes, budget)
    for sc in scores:
        render_score(sc)
    render_ranking(ranking)
    render_routing(routing)
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    console.print(f"time: {spent} (total {sum(timings.values()):.0f} s)", highlight=False)
    console.print(f"report: {html}\nrouting: {routing_json}\nstore: {cfg.store_path}", highlight=False)
    if any(m.name == DEFAULT_MODEL_NAME for m in models):
        console.print(
            "note: gemma-3-270m is a base model (no chat template): its quality ran in completion "
            "mode, and the -requant- variants were made with llama-quantize --allow-requantize.",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("run")(run)
