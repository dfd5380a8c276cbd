"""`edgebench quality [MODELS…]`, `quality suites`, `quality compare A B`."""

from __future__ import annotations

import hashlib
import math
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from edgebench.backends.base import Backend
from edgebench.backends.managed import ManagedLlamaServer
from edgebench.backends.openai import OpenAICompatible
from edgebench.cli._args import positive
from edgebench.cli._common import NO_WAIT, console, counting_progress, emit_json, hold_host, state
from edgebench.config import BackendConfig, Config
from edgebench.errors import ConfigError, EdgebenchError
from edgebench.host.probe import HostInfo, probe_host
from edgebench.measure.sweep import serving_config
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import resolve_model
from edgebench.quality import sandbox
from edgebench.quality.runner import STAGE, QualityResult, QualitySettings, Target, run_suite
from edgebench.quality.score import SuiteScore, compare, score
from edgebench.quality.suite import Suite, list_suites, load_suite
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerFailed
from edgebench.setup import ensure_models, ensure_runtime
from edgebench.store import Provenance, Store

__all__ = ["app", "managed_target", "render_score", "run_with_progress"]


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


def _remote(cfg: Config, name: str, host: HostInfo, timeout: float, stall: float) -> tuple[Backend, Target]:
    spec: BackendConfig | None = next((b for b in cfg.backends if b.name == name), None)
    if spec is None:
        known = ", ".join(b.name for b in cfg.backends) or "none configured"
        raise ConfigError(f"--backend {name!r}: not in the config's [[backends]] (known: {known})")
    key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
    backend = OpenAICompatible(
        spec.name,
        spec.url,
        model=spec.model,
        api_key=key,
        max_ctx=spec.max_ctx,
        timeout_s=timeout,
        stall_s=stall,
    )
    ident = hashlib.sha256(f"{spec.kind}|{spec.url}|{spec.model}".encode()).hexdigest()
    prov = Provenance(build_id=f"remote:{spec.kind}", host_fingerprint=host.fingerprint, model_sha256=ident)
    label = f"{spec.name}:{spec.model}" if spec.model else spec.name
    return backend, Target(label=label, mode="chat", provenance=prov, backend_id=f"{spec.name}|{spec.url}")


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
    scores: list[SuiteScore] = []
    jobs: list[tuple[str, Any]] = [("remote", b) for b in backend]
    if models or not backend:
        runtime = ensure_runtime(cfg)
        targets = named or ensure_models(cfg, store)
        jobs = [("local", (runtime, m)) for m in targets] + jobs
    for kind, job in jobs:
        with ExitStack() as stack:
            if kind == "remote":
                be, target = _remote(cfg, job, host, timeout, stall)
                stack.callback(be.close)
            else:
                be, target = managed_target(stack, cfg, store, host, job[0], job[1], timeout, stall)
            results = run_with_progress(store, be, target, s, settings)
        scores.append(score(results))
    if json_:
        emit_json({"suite": s.name, "digest": s.digest, "settings": settings, "scores": scores})
        return
    for sc in scores:
        render_score(sc)


def managed_target(
    stack: ExitStack,
    cfg: Config,
    store: Store,
    host: HostInfo,
    runtime: Runtime,
    model: ModelInfo,
    timeout: float,
    stall: float,
) -> tuple[Backend, Target]:
    rc = serving_config(store, model, host).model_copy(update={"ctx": 4096})
    mgr = ManagedLlamaServer(runtime, model, rc, cfg.data_dir / "logs", timeout_s=timeout, stall_s=stall)
    try:
        be = stack.enter_context(mgr)
    except ServerFailed as exc:
        raise ConfigError(f"llama-server for {model.name} did not start: {exc.detail}") from exc
    prov = Provenance(build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256)
    return be, Target(
        label=model.name,
        mode="chat" if model.chat_template else "completion",
        provenance=prov,
        backend_id=f"llama-server|{rc.key()}",
    )


def run_with_progress(
    store: Store, be: Backend, target: Target, s: Suite, settings: QualitySettings
) -> list[QualityResult]:
    prompts = sum(len(i.prompts()) if settings.variants else 1 for i in s.items)
    total = prompts * (settings.samples + 1)
    with counting_progress() as bar:
        task = bar.add_task(f"{target.label} · {s.name}", total=total)
        return run_suite(
            store,
            be,
            target,
            s,
            settings,
            on_result=lambda r: bar.update(
                task, advance=1, description=f"{target.label} · {r.item} v{r.variant} s{r.sample}"[:70]
            ),
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
