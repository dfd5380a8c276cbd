"""`edgebench plan`: predicted memory from GGUF metadata alone (and `--check` against measurements)."""

from __future__ import annotations

import math

import typer
from rich.markup import escape
from rich.table import Table

from edgebench.cli._args import positive, rpc_endpoints
from edgebench.cli._common import NO_WAIT, console, emit_json, hold_host, state
from edgebench.cli._progress import EventProgress
from edgebench.errors import ConfigError
from edgebench.fleet.probe import fetch_probe
from edgebench.fleet.split import plan_split
from edgebench.host.probe import probe_host
from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import MemoryPlan, fit_context, parse_kv_layers, plan_memory
from edgebench.models.registry import list_models, resolve_model
from edgebench.pipeline.plancheck import BUFFERS, Buffers, PlanCheckRow, check_plans
from edgebench.runtime.fitparams import Projection, project_memory
from edgebench.runtime.flags import KV_TYPES, RuntimeConfig
from edgebench.runtime.presets import host_arch, resolve_preset
from edgebench.setup import ensure_runtime, locate_quietly
from edgebench.textsafe import one_line

__all__ = ["register"]


def plan(
    model: str = typer.Argument(None, help="Registered name, path or sha256 prefix (--check: all models)."),
    ctx: int | None = typer.Option(
        None, "--ctx", "-c", help="Context size (-c; default 4096, or ctx_train when smaller)."
    ),
    kv: str = typer.Option("f16", "--kv", help="KV cache type K/V, e.g. q8_0 or q8_0/q4_0."),
    kv_layers: str | None = typer.Option(
        None, "--kv-layers", help='Per-layer KV types, e.g. "0-10:q8_0,11-:q4_0".'
    ),
    fa: str = typer.Option("on", "--fa", help="Flash attention: on, off, auto."),
    parallel: int = typer.Option(1, "--parallel", "-np", min=1, max=256, help="Server slots (-np)."),
    ngl: int = typer.Option(0, "--ngl", min=-1, help="GPU layers (CPU hosts: 0)."),
    ubatch: int = typer.Option(512, "--ubatch", min=1),
    arch: str | None = typer.Option(
        None, "--arch", help="Host arch to plan for: x86_64 or aarch64 (repack)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Build preset the model runs on (its CPU features decide repack), e.g. rk3588."
    ),
    fit: bool = typer.Option(False, "--fit", help="Largest context that fits --budget-gib, per KV type."),
    budget_gib: float | None = typer.Option(None, "--budget-gib", help="RAM budget for --fit."),
    check: bool = typer.Option(False, "--check", help="Predicted vs measured (llama-server) on a grid."),
    rpc: str | None = typer.Option(
        None, "--rpc", help="Split over RPC workers host:port,… (edgebench worker)."
    ),
    rpc_mem: str | None = typer.Option(
        None, "--rpc-mem", help="Each worker's usable MiB, e.g. 7000,7000 (default: asked from each worker)."
    ),
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
    if ctx is not None and ctx <= 0:
        raise ConfigError(
            f"--ctx {ctx}: llama.cpp reads 0 as 'the model's ctx_train'; give the context explicitly"
        )
    positive("--budget-gib", budget_gib)
    cfg = RuntimeConfig(
        ctx=ctx or 4096,
        cache_type_k=k,
        cache_type_v=v,
        flash_attn=fa,  # type: ignore[arg-type]
        parallel=parallel,
        ngl=ngl,
        ubatch=ubatch,
        batch=max(2048, ubatch),
    )
    the_arch, flags = _target(arch, preset)
    if check:
        targets = [resolve_model(store, model)] if model else list_models(store)
        hold_host(no_wait)
        runtime = ensure_runtime(state.config)
        with EventProgress() as emit:
            rows = check_plans(
                store, runtime, probe_host(), targets, log_dir=state.config.data_dir / "logs", emit=emit
            )
        if json_:
            emit_json({"check": rows})
            return
        _render_check(rows)
        return
    if model is None:
        raise ConfigError("plan: name a model (or use --check for every registered one)")
    m = resolve_model(store, model)
    if ctx is None:  # the default must fit a model trained on less than 4096 tokens
        cfg = cfg.model_copy(update={"ctx": min(4096, m.ctx_train)})
    elif ctx > m.ctx_train:
        raise ConfigError(f"--ctx {ctx}: above {m.name}'s trained context {m.ctx_train}")
    layers = parse_kv_layers(kv_layers, m.n_layer) if kv_layers else None
    p = plan_memory(m, cfg, n_parallel=parallel, kv_layers=layers, host_arch=the_arch, cpu_flags=flags)
    if rpc is not None or rpc_mem is not None:
        _render_split(m, cfg, rpc, rpc_mem, budget_gib, flags, json_)
        return
    fits = None
    if fit:
        if budget_gib is None:
            raise ConfigError("--fit needs --budget-gib (the RAM you can give the model)")
        fits = fit_context(
            m, cfg, budget_gib * 1024, n_parallel=parallel, host_arch=the_arch, cpu_flags=flags
        )
    projection = _projection(m.path, cfg) if p.unverified and the_arch == host_arch() else None
    if json_:
        emit_json({"plan": p, "fit": fits, "budget_gib": budget_gib, "llama_cpp_projection": projection})
        return
    _render_plan(p)
    if projection is not None:
        _render_projection(p, projection)
    if fits is not None:
        console.print(
            f"largest context fitting {budget_gib} GiB (predicted): "
            + ", ".join(f"{t} → {c}" for t, c in fits.items()),
            highlight=False,
        )


def _render_split(
    m: ModelInfo,
    cfg: RuntimeConfig,
    rpc: str | None,
    rpc_mem: str | None,
    budget_gib: float | None,
    flags: tuple[str, ...] | None,
    json_: bool,
) -> None:
    """`plan --rpc`: layers over the head and the workers by each one's usable memory."""
    eps = rpc_endpoints(rpc)
    if not eps:
        raise ConfigError("--rpc-mem goes with --rpc: the workers host:port,…")
    if rpc_mem is None:  # each worker says it (edgebench worker serves its probe on port+1)
        mems = [float(fetch_probe(ep)["usable_mib"]) for ep in eps]
    else:
        try:
            mems = [float(x) for x in rpc_mem.split(",") if x.strip()]
        except ValueError:
            mems = []
        if len(mems) != len(eps) or any(not math.isfinite(x) or x <= 0 for x in mems):
            raise ConfigError(f"--rpc-mem {rpc_mem!r}: {len(eps)} positive MiB figures, one per --rpc worker")
    head = (
        budget_gib * 1024
        if budget_gib is not None
        else state.config.budgets.usable_mib(probe_host().ram_total_mib)
    )
    sp = plan_split(m, cfg, head_usable_mib=head, workers=list(zip(eps, mems, strict=True)), cpu_flags=flags)
    if json_:
        devices = [d.__dict__ | {"total_mib": d.total_mib} for d in sp.devices]
        emit_json({"split": {**sp.__dict__, "devices": devices, "flags": sp.flags() if sp.fits else []}})
        return
    title = f"{escape(m.name)} at context {sp.ctx} over the head and {len(eps)} RPC workers (predicted)"
    t = Table(title=title, title_justify="left")
    for col in ("device", "layers", "weights MiB", "KV MiB", "other MiB", "total / usable MiB"):
        t.add_column(col, justify="left" if col in ("device", "layers") else "right")
    for d in sp.devices:
        span = f"{d.layers[0]}-{d.layers[-1]}" if d.layers else "—"
        t.add_row(escape(d.name), span, f"{d.weights_mib:.0f}", f"{d.kv_mib:.0f}", f"{d.other_mib:.0f}",
                  f"{d.total_mib:.0f} / {d.usable_mib:.0f}")  # fmt: skip
    console.print(t)
    if sp.fits_one_host:
        console.print(f"fits the head alone ({sp.one_host_mib:.0f} MiB predicted): RPC would only cost speed")
    elif not sp.fits:
        raise ConfigError(
            f"{m.name} at context {sp.ctx}: does not fit the head and these workers "
            f"({sp.shortfall_mib:.0f} MiB short); add a worker, lower --ctx or quantize the KV cache"
        )
    else:
        console.print("flags: " + " ".join(sp.flags()), highlight=False)


def _target(arch: str | None, preset: str | None) -> tuple[str, tuple[str, ...] | None]:
    """(host arch, CPU features of the build) the plan is for: a preset's target features, this
    host's own flags for a native build here, else the arch's defaults (HOST_ARCHES)."""
    if preset is not None:
        pr = resolve_preset(preset)
        if arch is not None and arch != pr.arch:
            raise ConfigError(f"--arch {arch} and --preset {preset} ({pr.arch}) disagree")
        if pr.target_features is not None:
            return pr.arch, pr.target_features
        arch = pr.arch
    the_arch = arch or host_arch()
    if the_arch == host_arch():
        return the_arch, tuple(probe_host().cpu_flags) or None
    return the_arch, None


def _projection(model_path: str, cfg: RuntimeConfig) -> Projection | None:
    """llama.cpp's own projection, when a build is at hand (plan never builds one)."""
    runtime = locate_quietly(state.config)
    return None if runtime is None else project_memory(runtime, model_path, cfg)


def _render_projection(p: MemoryPlan, proj: Projection) -> None:
    if proj.error is not None:
        console.print(f"llama.cpp projection (llama-fit-params): unavailable ({proj.error})", highlight=False)
        return
    console.print(
        f"llama.cpp projection (llama-fit-params, for the {', '.join(p.unverified)} this planner has not "
        f"checked): model {proj.model_mib:.0f} MiB, context {proj.context_mib:.0f} MiB, compute "
        f"{proj.compute_mib:.0f} MiB (logits for a full ubatch; no CPU_REPACK copy, no process overhead)",
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
        (f"context checkpoints ({p.n_checkpoints})", p.checkpoints_mib),
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


def _render_check(rows: list[PlanCheckRow]) -> None:
    t = Table(
        title="planner accuracy: PREDICTED (edgebench planner) and PROJECTED (llama.cpp's llama-fit-params) "
        "vs MEASURED (llama-server's own buffer lines; RSS sampled at load, before any request)",
        title_justify="left",
    )
    for col in ("model", "ctx", "kv", "fa", "source", "model buf", "KV", "compute", "RSS"):
        t.add_column(col)
    for r in rows:
        if r.error is not None:
            err = f"[red]{escape(one_line(r.error, 120))}[/red]"
            t.add_row(r.model, str(r.ctx), r.kv, r.fa, "", err, "", "", "")
            continue
        flag = " (unverified arch)" if r.unverified else ""
        sources: tuple[tuple[str, Buffers, Buffers], ...] = (
            ("measured", r.measured, {}),
            (f"planner{flag}", r.predicted, r.error_pct),
            ("llama.cpp", r.llama_cpp_projection, r.llama_cpp_error_pct),
        )
        for source, vals, errs in sources:
            cells = []
            for b in BUFFERS:
                v, e = vals.get(b), errs.get(b)
                cells.append("—" if v is None else f"{v:.1f}" + (f" ({e:+.1f} %)" if e is not None else ""))
            head = (r.model, str(r.ctx), r.kv, r.fa) if source == "measured" else ("", "", "", "")
            t.add_row(*head, source, *cells)
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
