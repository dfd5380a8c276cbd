"""`edgebench context`: the largest context that loads, fills, decodes and stays in budget."""

from __future__ import annotations

import math

import typer
from rich.markup import escape
from rich.table import Table

from edgebench.cli._args import positive, rpc_endpoints, split_weights
from edgebench.cli._common import NO_WAIT, console, emit_json, hold_host, state
from edgebench.cli._progress import EventProgress
from edgebench.cli._render import gib
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.measure.context import ContextProbe, ContextTrial
from edgebench.models.registry import resolve_model
from edgebench.pipeline.context import probe_models
from edgebench.runtime.flags import KV_TYPES
from edgebench.setup import ensure_models, ensure_runtime
from edgebench.textsafe import one_line

__all__ = ["register"]


def context(
    models: list[str] = typer.Argument(None, help="Models (default: configured ones)."),
    kv: str = typer.Option("f16", "--kv", help="KV cache type (K and V), e.g. q4_0."),
    fa: str = typer.Option("on", "--fa", help="Flash attention: on, off, auto."),
    threads: int | None = typer.Option(None, "--threads", "-t", min=1, help="Default: the sweep's best."),
    ctx: str | None = typer.Option(
        None, "--ctx", help="Contexts to consider, e.g. 2048,8192 (default 2k…ctx_train)."
    ),
    budget_mib: float | None = typer.Option(
        None, "--budget-mib", help="RAM budget (default: total − reserve)."
    ),
    swap_limit_mib: float | None = typer.Option(None, "--swap-limit-mib", help="Allowed swap growth."),
    n_decode: int = typer.Option(16, "--n-decode", min=1, help="Tokens to decode after the fill."),
    rpc: str | None = typer.Option(
        None, "--rpc", help="RPC workers host:port,…: the layers split over them."
    ),
    tensor_split: str | None = typer.Option(
        None, "--tensor-split", help="One weight per RPC worker, e.g. 1,1."
    ),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
    no_wait: bool = NO_WAIT,
) -> None:
    """Find each model's stable context (binary search) and record memory and timings per context."""
    cfg, store = state.config, state.store
    if kv not in KV_TYPES:
        raise ConfigError(f"--kv {kv!r}: unknown KV cache type; one of {', '.join(KV_TYPES)}")
    if fa not in ("on", "off", "auto"):
        raise ConfigError(f"--fa {fa!r}: on, off or auto")
    ctx_list = None
    if ctx is not None:
        try:
            ctx_list = [int(c) for c in ctx.split(",") if c.strip()]
        except ValueError:
            raise ConfigError(f"--ctx {ctx!r}: expected comma-separated integers") from None
        if not ctx_list:
            raise ConfigError(f"--ctx {ctx!r}: no values; give e.g. 2048,8192 or leave the option out")
        if any(c <= 0 for c in ctx_list):
            raise ConfigError(f"--ctx {ctx!r}: contexts must be > 0 (llama.cpp's 0 means ctx_train; say it)")
    positive("--budget-mib", budget_mib)  # a NaN or negative budget fails every context as "ram"
    rpc_eps, split = rpc_endpoints(rpc), split_weights(tensor_split, rpc)
    if swap_limit_mib is not None and not (math.isfinite(swap_limit_mib) and swap_limit_mib >= 0):
        raise ConfigError(f"--swap-limit-mib {swap_limit_mib:g}: must be a finite number ≥ 0")
    named = [resolve_model(store, m) for m in models or []]  # typer gives None for no arguments
    hold_host(no_wait)
    runtime = ensure_runtime(cfg)
    targets = named or ensure_models(cfg, store)
    host = probe_host()
    budget = budget_mib or cfg.budgets.usable_mib(host.ram_total_mib)
    swap_limit = swap_limit_mib if swap_limit_mib is not None else float(cfg.budgets.swap_growth_mib)
    with EventProgress() as emit:
        probes = probe_models(
            store,
            runtime,
            host,
            targets,
            budget_mib=budget,
            swap_limit_mib=swap_limit,
            n_decode=n_decode,
            log_dir=cfg.data_dir / "logs",
            kv=kv,
            fa=fa,  # type: ignore[arg-type]  # checked above
            threads=threads,
            rpc=rpc_eps,
            tensor_split=split,
            contexts=lambda m: ctx_list,
            emit=emit,
        )
    if json_:
        emit_json({"budget_mib": budget, "probes": probes})
        return
    render_context(probes, budget)


def _mib(x: float | None) -> str:
    return f"{x:.1f}" if x is not None else "—"


def _result(t: ContextTrial) -> str:
    return "OK" if t.ok else f"[red]{t.failed_step}[/red]: {escape(one_line(t.cause, 50))}"


def render_context(probes: list[ContextProbe], budget: float) -> None:
    t = Table(
        title=f"successful context windows (measured; RAM budget {budget:.0f} MiB)", title_justify="left"
    )
    for col in ("model", "kv", "stable context", "tried"):
        t.add_column(col)
    for p in probes:
        tried = ", ".join(f"{x.ctx}{'' if x.ok else ' ✗' + (x.failed_step or '')}" for x in p.trials)
        stable = str(p.stable_ctx or "none")
        if p.incomplete:  # a transient failure stopped the search: a lower bound, retried next run
            stable = f"≥ {p.stable_ctx or 0} (incomplete)"
        t.add_row(p.model, p.kv, stable, tried)
    console.print(t)
    t = Table(title="per-context probe (measured; predicted host total beside it)", title_justify="left")
    for col in (
        "model",
        "context",
        "load ms",
        "e2e ms",
        "peak RSS",
        "peak anon",
        "predicted",
        "model",
        "KV",
        "compute",
        "result",
    ):
        t.add_column(col, justify="right" if col not in ("model", "result") else "left")
    for p in probes:
        for x in p.trials:
            dev = x.memory.devices.get("CPU") if x.memory else None
            t.add_row(
                p.model,
                str(x.ctx),
                _mib(x.load_ms),
                _mib(x.e2e_ms),
                f"{x.peak_rss_mib:.0f}",
                _mib(x.peak_anon_mib),
                _mib(x.predicted_host_mib),
                _mib(dev.model_mib if dev else None),
                _mib(dev.kv_mib if dev else None),
                _mib(dev.compute_mib if dev else None),
                _result(x),
            )
    console.print(t)
    for p in probes:
        ok = [x for x in p.trials if x.ok and x.ctx == p.stable_ctx]
        if ok:
            x = ok[0]
            console.print(
                f"{p.model}: {gib(p.file_size)} ({p.bpw:.2f} BPW) at context {x.ctx}: startup "
                f"{(x.load_ms or 0) / 1000:.1f} s, peak RSS {x.peak_rss_mib:.0f} MiB "
                f"(anon {_mib(x.rss_anon_mib)}, file-backed {_mib(x.rss_file_mib)} at the end; "
                f"server pages in swap {_mib(x.swap_own_mib)})",
                highlight=False,
            )


def register(app: typer.Typer) -> None:
    app.command("context")(context)
