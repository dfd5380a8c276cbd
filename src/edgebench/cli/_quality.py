"""`edgebench quality [MODELS…]`, `quality suites`, `quality compare A B`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from edgebench.cli._args import positive
from edgebench.cli._common import NO_WAIT, console, emit_json, hold_host, state
from edgebench.cli._progress import EventProgress
from edgebench.errors import ConfigError, EdgebenchError
from edgebench.host.probe import probe_host
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import resolve_model
from edgebench.pipeline.quality import StartFailure, run_quality
from edgebench.quality import sandbox
from edgebench.quality.runner import STAGE, QualityResult, QualitySettings
from edgebench.quality.score import SuiteScore, compare
from edgebench.quality.suite import list_suites, load_suite
from edgebench.runtime.proc import ExitCause
from edgebench.runtime.server import ServerFailed
from edgebench.setup import ensure_models, ensure_runtime
from edgebench.store import Store
from edgebench.textsafe import one_line

__all__ = ["app", "render_failures", "render_score"]


class _DefaultToRun(TyperGroup):
    """`edgebench quality gemma` means `edgebench quality run gemma` (the issue's spelling)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return list(super().parse_args(ctx, args))


app = typer.Typer(
    cls=_DefaultToRun,
    help="Quality and tool-calling suite with confidence intervals.",
    no_args_is_help=False,
    invoke_without_command=True,
)


@app.callback()
def _quality(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        ctx.invoke(quality_run)


@app.command("run")
def quality_run(
    models: list[str] = typer.Argument(None, help="Models (default: configured ones)."),
    suite: str = typer.Option("seed14", "--suite", "-s", help="Suite name (core, seed14) or a YAML path."),
    suite_dir: list[Path] = typer.Option([], "--suite-dir", help="Directory with suites of your own."),
    samples: int = typer.Option(3, "--samples", "-k", min=0, help="Seeded samples after the greedy pass."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Deployment temperature."),
    backend: list[str] = typer.Option([], "--backend", "-b", help="A configured remote backend; repeatable."),
    timeout: float = typer.Option(300.0, "--timeout", min=1.0, help="Seconds per request."),
    stall: float = typer.Option(60.0, "--stall", min=1.0, help="Seconds of silence mid-stream."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
    no_wait: bool = NO_WAIT,
    allow_unsandboxed: bool = typer.Option(
        False, "--allow-unsandboxed", help="Run code items even where bubblewrap cannot isolate them."
    ),
) -> None:
    """Run a suite on models (managed llama-server) and/or remote backends; resumable."""
    cfg, store = state.config, state.store
    # everything checked before a server starts: a bad --backend used to surface after the models ran
    if missing := [d for d in suite_dir if not d.is_dir()]:
        raise ConfigError(f"--suite-dir {missing[0]}: not a directory")
    positive("--timeout", timeout)
    positive("--stall", stall)
    if not math.isfinite(temperature):
        raise ConfigError(f"--temperature {temperature:g}: must be a finite number ≥ 0")
    if unknown := [b for b in backend if b not in {c.name for c in cfg.backends}]:
        known = ", ".join(b.name for b in cfg.backends) or "none configured"
        raise ConfigError(f"--backend {unknown[0]!r}: not in the config's [[backends]] (known: {known})")
    s = load_suite(suite, list(suite_dir))
    sandbox.allow_unsandboxed(allow_unsandboxed or cfg.quality.allow_unsandboxed)
    settings = QualitySettings(samples=samples, temperature=temperature)
    named = [resolve_model(store, m) for m in models or []]  # typer gives None for no arguments
    hold_host(no_wait)
    host = probe_host()
    runtime = None
    local: list[ModelInfo] = []
    if models or not backend:
        runtime = ensure_runtime(cfg)
        local = named or ensure_models(cfg, store)
    with EventProgress() as emit:
        run = run_quality(
            cfg,
            store,
            host,
            s,
            settings,
            runtime=runtime,
            models=local,
            backends=backend,
            timeout_s=timeout,
            stall_s=stall,
            emit=emit,
        )
    if json_:
        emit_json(run)
    else:
        for sc in run.scores:
            render_score(sc)
        render_failures(run.failed)
    if not run.complete:  # the others were scored; the exit code says not everything was
        f = run.failed[0]
        more = f" (and {len(run.failed) - 1} more)" if len(run.failed) > 1 else ""
        raise ServerFailed(
            ExitCause(f.cause),
            f"{f.model}: llama-server did not start: {f.detail}{more}; stored, the other targets were scored",
            f.log_tail,
        )


def render_failures(failed: list[StartFailure]) -> None:
    for f in failed:
        why = "retried on the next run" if f.transient else "stored as this config's result"
        console.print(
            f"quality: {f.model}: llama-server did not start ({f.cause}: {one_line(f.detail, 200)}); {why}",
            markup=False,
            highlight=False,
        )


def render_score(sc: SuiteScore) -> None:
    t = Table(title=f"{sc.target} · suite {sc.suite} · {sc.runs} replies (measured)", title_justify="left")
    for col in (
        "category",
        "weight",
        "greedy pass",
        "Wilson 95 %",
        "pass rate (all runs)",
        "95 % CI",
        "pass^k",
        "failures",
    ):
        t.add_column(col)
    for c in sc.categories:
        fails = ", ".join(f"{k} {v}" for k, v in sorted(c.failures.items(), key=lambda kv: -kv[1]))
        # items whose canonical prompt passed in every run (greedy and each sample): τ-bench pass^k
        steady = sum(i.pass_hat_k for i in sc.items if i.category == c.category)
        t.add_row(
            c.category,
            f"×{c.weight:g}",
            f"{c.greedy_passed}/{c.items}",
            f"[{c.wilson_low:.2f}, {c.wilson_high:.2f}]",
            f"{c.mean:.2f}",
            f"[{c.ci_low:.2f}, {c.ci_high:.2f}]",
            f"{steady}/{c.items}",
            fails,
        )
    console.print(t)
    console.print(
        f"weighted score {sc.weighted:.3f} [95 % CI {sc.weighted_low:.3f}, {sc.weighted_high:.3f}] · "
        f"mean latency {sc.mean_latency_s:.1f} ± {sc.latency_sd_s:.1f} s",
        highlight=False,
    )
    if sc.mode == "completion":
        console.print(
            "[yellow]completion mode[/yellow]: this is a base model without a chat template; items ran "
            "as a few-shot completion prompt (tools offered as JSON in the prompt), not as chat."
        )
    if sc.unsandboxed:
        console.print(
            f"[yellow]not scored[/yellow]: {sc.unsandboxed} code replies were not run, for want of a sandbox "
            "(apt-get install bubblewrap, or --allow-unsandboxed to run them unisolated)."
        )


@app.command("suites")
def quality_suites(
    suite_dir: list[Path] = typer.Option([], "--suite-dir", help="Directory with suites of your own."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the suites: items, variants, items per category."""
    summaries = list_suites(list(suite_dir))
    if json_:
        emit_json({"suites": [s.model_dump(mode="json") for s in summaries]})
        return
    t = Table(title="suites", title_justify="left")
    for col in ("name", "items", "variants", "categories"):
        t.add_column(col)
    for s in summaries:
        t.add_row(
            s.name, str(s.items), str(s.variants), ", ".join(f"{k} {v}" for k, v in s.categories.items())
        )
    console.print(t)


@app.command("compare")
def quality_compare(
    a: str = typer.Argument(..., help="Model name / sha256 prefix, or a remote backend name."),
    b: str = typer.Argument(..., help="The other one."),
    suite: str = typer.Option("seed14", "--suite", "-s"),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Paired comparison on the same items: McNemar on greedy verdicts, bootstrap on the score."""
    store = state.store
    ra, rb = _stored(store, a, suite), _stored(store, b, suite)
    try:
        c = compare(ra, rb)
    except ValueError as exc:  # e.g. no item in common: a user error, not a crash
        raise ConfigError(f"quality compare {a} {b}: {exc}") from None
    if json_:
        emit_json(c)
        return
    console.print(
        f"{c.a} vs {c.b} on {c.items} shared items of {suite}: greedy passes only {c.a} {c.a_only}, "
        f"only {c.b} {c.b_only} (McNemar p = {c.mcnemar_p:.3f}); weighted difference {c.diff:+.3f} "
        f"[95 % CI {c.diff_low:+.3f}, {c.diff_high:+.3f}] → {c.verdict}",
        highlight=False,
    )


def _stored(store: Store, ref: str, suite: str) -> list[QualityResult]:
    rows = [QualityResult.model_validate(r.record) for r in store.rows(STAGE)]
    mine = [r for r in rows if r.suite == suite and (r.target == ref or r.target.split(":")[0] == ref)]
    if not mine:
        try:
            m = resolve_model(store, ref)
            mine = [r for r in rows if r.suite == suite and r.target == m.name]
        except EdgebenchError:
            mine = []
    if not mine:
        raise ConfigError(
            f"quality compare: no stored {suite} results for {ref!r}; run `edgebench quality {ref}`"
        )
    return mine
