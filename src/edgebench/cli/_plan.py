"""`edgebench plan`: predicted memory from GGUF metadata alone (and `--check` against measurements)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgebench.cli._common import NO_WAIT, console, emit_json, hold_host, state
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.models.memory import MemoryPlan, fit_context, parse_kv_layers, plan_memory
from edgebench.models.registry import list_models, resolve_model
from edgebench.runtime.flags import KV_TYPES, RuntimeConfig
from edgebench.runtime.memlog import read_memory_log
from edgebench.runtime.presets import host_arch
from edgebench.runtime.server import ServerFailed, ServerProcess
from edgebench.setup import ensure_runtime
from edgebench.store import Provenance

__all__ = ["register"]


def plan(
    model: str = typer.Argument(None, help="Registered name, path or sha256 prefix (--check: all models)."),
    ctx: int = typer.Option(4096, "--ctx", "-c", help="Context size (-c)."),
    kv: str = typer.Option("f16", "--kv", help="KV cache type K/V, e.g. q8_0 or q8_0/q4_0."),
    kv_layers: str | None = typer.Option(
        None, "--kv-layers", help='Per-layer KV types, e.g. "0-10:q8_0,11-:q4_0".'
    ),
    fa: str = typer.Option("on", "--fa", help="Flash attention: on, off, auto."),
    parallel: int = typer.Option(1, "--parallel", "-np", min=1, help="Server slots (-np)."),
    ngl: int = typer.Option(0, "--ngl", min=-1, help="GPU layers (CPU hosts: 0)."),
    ubatch: int = typer.Option(512, "--ubatch", min=1),
    arch: str | None = typer.Option(
        None, "--arch", help="Host arch to plan for: x86_64 or aarch64 (repack)."
    ),
    fit: bool = typer.Option(False, "--fit", help="Largest context that fits --budget-gib, per KV type."),
    budget_gib: float | None = typer.Option(None, "--budget-gib", help="RAM budget for --fit."),
    check: bool = typer.Option(False, "--check", help="Predicted vs measured (llama-server) on a grid."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
    no_wait: bool = NO_WAIT,
) -> None:
    """Predict model / KV / compute / output buffers and host total (labelled: predicted)."""
    store = state.store
    k, _, v = kv.partition("/")
    v = v or k
    for t in (k, v):
        if t not in KV_TYPES:
            raise ConfigError(f"--kv {t!r}: unknown KV cache type; one of {', '.join(KV_TYPES)}")
    if fa not in ("on", "off", "auto"):
        raise ConfigError(f"--fa {fa!r}: on, off or auto")
    if ctx <= 0:
        raise ConfigError(
            "--ctx 0: llama.cpp reads 0 as 'the model's ctx_train'; give the context explicitly"
        )
    cfg = RuntimeConfig(
        ctx=ctx,
        cache_type_k=k,
        cache_type_v=v,
        flash_attn=fa,  # type: ignore[arg-type]
        parallel=parallel,
        ngl=ngl,
        ubatch=ubatch,
        batch=max(2048, ubatch),
    )
    the_arch = arch or host_arch()
    if check:
        hold_host(no_wait)
        rows = _check(
            state.config.data_dir / "logs", [resolve_model(store, model)] if model else list_models(store)
        )
        if json_:
            emit_json({"check": rows})
            return
        _render_check(rows)
        return
    if model is None:
        raise ConfigError("plan: name a model (or use --check for every registered one)")
    m = resolve_model(store, model)
    if ctx > m.ctx_train:
        raise ConfigError(f"--ctx {ctx}: above {m.name}'s trained context {m.ctx_train}")
    layers = parse_kv_layers(kv_layers, m.n_layer) if kv_layers else None
    p = plan_memory(m, cfg, n_parallel=parallel, kv_layers=layers, host_arch=the_arch)
    fits = None
    if fit:
        if budget_gib is None:
            raise ConfigError("--fit needs --budget-gib (the RAM you can give the model)")
        fits = fit_context(m, cfg, budget_gib * 1024, n_parallel=parallel, host_arch=the_arch)
    if json_:
        emit_json({"plan": p, "fit": fits, "budget_gib": budget_gib})
        return
    _render_plan(p)
    if fits is not None:
        console.print(
            f"largest context fitting {budget_gib} GiB (predicted): "
            + ", ".join(f"{t} → {c}" for t, c in fits.items()),
            highlight=False,
        )


def _render_plan(p: MemoryPlan) -> None:
    t = Table(
        title=f"{p.model} · ctx {p.n_ctx} · {p.n_seq} seq · fa {'on' if p.flash_attn else 'off'} "
        f"(PREDICTED from GGUF metadata)",
        title_justify="left",
    )
    t.add_column("buffer")
    t.add_column("MiB", justify="right")
    for name, val in (
        ("model (weights)", p.model_mib),
        ("repack copy", p.repack_mib),
        ("KV cache", p.kv_mib),
        ("  of which SWA", p.kv_swa_mib),
        ("recurrent state", p.recurrent_mib),
        ("compute", p.compute_mib),
        ("output", p.output_mib),
        ("CPU work buffer", p.work_mib),
        ("process overhead", p.overhead_mib),
        ("host total", p.host_total_mib),
    ):
        if val or name in ("host total", "KV cache"):
            t.add_row(name, f"{val:.2f}")
    console.print(t)
    for n in p.notes:
        console.print(f"note: {n}", highlight=False)


def _check(log_dir: Path, models: list[Any]) -> list[dict[str, Any]]:
    """Start llama-server per grid point, read its own buffer lines, compare with the plan."""
    runtime = ensure_runtime(state.config)
    fingerprint = probe_host().fingerprint
    rows = []
    for m in models:
        for ctx in (2048, 8192):
            if ctx > m.ctx_train:
                continue
            for kvt in ("f16", "q8_0"):
                for fa in ("on", "off"):
                    if kvt != "f16" and fa == "off":
                        continue  # quantized V needs flash attention
                    cfg = RuntimeConfig(threads=2, ctx=ctx, cache_type_k=kvt, cache_type_v=kvt, flash_attn=fa)
                    p = plan_memory(m, cfg)
                    # RSS is sampled right after load, with nothing in the cache: predict that state.
                    at_load = plan_memory(m, cfg, tokens_in_cache=1).host_total_mib
                    log = log_dir / f"plan-check-{m.name}-{cfg.key()}.log"
                    log_dir.mkdir(parents=True, exist_ok=True)
                    try:
                        with ServerProcess(runtime, m.path, cfg, log, verbose=True) as srv:
                            rss = srv.peak_rss_mib
                    except ServerFailed as exc:
                        rows.append({"model": m.name, "ctx": ctx, "kv": kvt, "fa": fa, "error": exc.detail})
                        continue
                    dev = read_memory_log(log).devices.get("CPU")
                    meas = {
                        "model": dev.model_mib if dev else None,
                        "kv": dev.kv_mib if dev else None,
                        "compute": dev.compute_mib if dev else None,
                        "rss": rss,
                    }
                    pred = {
                        "model": p.model_mib,
                        "kv": p.kv_mib,
                        "compute": p.compute_mib,
                        "rss": at_load,
                    }
                    err = {b: (100 * (pred[b] - mv) / mv if mv else None) for b, mv in meas.items()}
                    rows.append(
                        {
                            "model": m.name,
                            "ctx": ctx,
                            "kv": kvt,
                            "fa": fa,
                            "predicted": pred,
                            "measured": meas,
                            "error_pct": err,
                        }
                    )
                    state.store.put(
                        "plan_check",
                        Provenance(
                            build_id=runtime.build_id, host_fingerprint=fingerprint, model_sha256=m.sha256
                        ),
                        {"runtime": cfg.model_dump(mode="json")},
                        rows[-1],
                    )
    return rows


def _render_check(rows: list[dict[str, Any]]) -> None:
    t = Table(
        title="planner accuracy: predicted vs measured (llama-server's own buffer lines; RSS sampled "
        "at load, before any request)",
        title_justify="left",
    )
    for col in ("model", "ctx", "kv", "fa", "model buf", "KV", "compute", "RSS"):
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(r["model"], str(r["ctx"]), r["kv"], r["fa"], f"[red]{r['error']}[/red]", "", "", "")
            continue
        cells = []
        for b in ("model", "kv", "compute", "rss"):
            e, mv, pv = r["error_pct"][b], r["measured"][b], r["predicted"][b]
            cells.append(f"{pv:.1f} / {mv:.1f} ({e:+.1f} %)" if e is not None and mv else "—")
        t.add_row(r["model"], str(r["ctx"]), r["kv"], r["fa"], *cells)
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
