"""`edgebench quant`: mixed per-tensor quantization recipes — preview (exact size, RAM at a
context), emit (llama-quantize / ik_llama.cpp commands), apply (+ verify), solve (for a budget)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgebench.cli._args import positive
from edgebench.cli._common import NO_WAIT, console, emit_json, err_console, hold_host, state
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import resolve_model
from edgebench.pipeline.quant import quant_evaluator, verify_candidates
from edgebench.quant.apply import ik_custom_q, quantize_command, write_tensor_type_file
from edgebench.quant.fit import ram_plan
from edgebench.quant.imatrix import read_imatrix
from edgebench.quant.measure import Evaluator
from edgebench.quant.preview import FilePlan, plan_file
from edgebench.quant.recipe import load_recipe, save_recipe
from edgebench.quant.solve import keep_source, parse_pin, solve, uniform
from edgebench.quant.target import TargetRow, Targets, run_target
from edgebench.quant.types import canonical_type
from edgebench.quant.verify import QuantRow, verify_recipe
from edgebench.runtime.flags import KV_TYPES, RuntimeConfig
from edgebench.setup import ensure_runtime

__all__ = ["app"]

app = typer.Typer(help=__doc__, no_args_is_help=True)
_MIB = 1024 * 1024

_CTX = typer.Option(4096, "--ctx", "-c", help="Target context the RAM is predicted (and measured) at.")
_KV = typer.Option("f16", "--kv", help="KV cache type at the target context (K/V: q8_0/q4_0).")
_JSON = typer.Option(False, "--json", help="Print JSON.")
_IMATRIX = typer.Option(
    None, "--imatrix", help="Importance matrix (GGUF, from llama-imatrix) to quantize with."
)
_MAKE_IMATRIX = typer.Option(
    False, "--make-imatrix", help="Make one with llama-imatrix on the text (--text or the shipped one)."
)


def _cfg(ctx: int, kv: str, threads: int = 2) -> RuntimeConfig:
    positive("--ctx", ctx)
    k, _, v = kv.partition("/")
    v = v or k
    for t in (k, v):
        if t not in KV_TYPES:
            raise ConfigError(f"--kv {kv!r}: {t!r} is not a KV type ({', '.join(KV_TYPES)})")
    fa = "on" if (k, v) != ("f16", "f16") else "auto"
    return RuntimeConfig(ctx=ctx, cache_type_k=k, cache_type_v=v, flash_attn=fa, threads=threads)  # type: ignore[arg-type]


def _source(ref: str) -> ModelInfo:
    return resolve_model(state.store, ref)


def _plan_table(plan: FilePlan, ram_mib: float, ctx: int) -> Table:
    groups: dict[str, list[int]] = {}
    for t in plan.tensors:
        key = f"{t.decided_by} → {t.dst_type}" + (f" (asked {t.fell_back_from})" if t.fell_back_from else "")
        g = groups.setdefault(key, [0, 0, 0])
        g[0] += 1
        g[1] += t.src_bytes
        g[2] += t.dst_bytes
    tab = Table(
        title=f"recipe {escape(plan.recipe.name)}: {plan.file_bytes / _MIB:.2f} MiB file (predicted), "
        f"RAM at context {ctx}: {ram_mib:.0f} MiB (predicted)",
        title_justify="left",
    )
    for col in ("decided by → type", "tensors", "source MiB", "MiB"):
        tab.add_column(col, justify="left" if col.startswith("decided") else "right")
    for key, (n, sb, db) in sorted(groups.items(), key=lambda kv: -kv[1][2]):
        tab.add_row(escape(key), str(n), f"{sb / _MIB:.2f}", f"{db / _MIB:.2f}")
    return tab


@app.command("preview")
def preview(
    source: str = typer.Argument(..., help="Source GGUF (path or registered model)."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="Recipe file (.toml or .json)."),
    ctx: int = _CTX,
    kv: str = _KV,
    imatrix: Path | None = _IMATRIX,
    json_: bool = _JSON,
) -> None:
    """The exact file size and the RAM at a context a recipe gives, before quantizing anything."""
    r = load_recipe(recipe)
    cfg = _cfg(ctx, kv)
    meta = read_imatrix(imatrix) if imatrix is not None else None
    info = _source(source)
    plan = plan_file(Path(info.path), r, imatrix=meta)
    ram = ram_plan(info, plan, cfg, cpu_flags=tuple(probe_host().cpu_flags) or None)
    if json_:
        emit_json({"recipe": r.model_dump(mode="json"), "file_bytes": plan.file_bytes,
                   "header_bytes": plan.header_bytes, "ram_mib": round(ram.host_total_mib, 1),
                   "tensors": [t.__dict__ for t in plan.tensors], "notes": list(plan.notes)})  # fmt: skip
        return
    console.print(_plan_table(plan, ram.host_total_mib, ctx))
    for n in plan.notes:
        console.print(f"[dim]note: {escape(n)}[/dim]")


@app.command("emit")
def emit(
    source: str = typer.Argument(..., help="Source GGUF (path or registered model)."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="Recipe file (.toml or .json)."),
    out: Path = typer.Option(Path("out.gguf"), "--out", "-o", help="Output file name in the command."),
    ik: bool = typer.Option(False, "--ik", help="The ik_llama.cpp --custom-q form instead."),
) -> None:
    """The llama-quantize command for the recipe (with its --tensor-type-file written beside
    --out), or ik_llama.cpp's --custom-q form."""
    info = _source(source)
    if ik:
        r = load_recipe(recipe, ik=True)
        console.print(ik_custom_q(r, info.n_layer, info.path, str(out)), markup=False, highlight=False)
        return
    r = load_recipe(recipe)
    plan = plan_file(Path(info.path), r)
    tf = write_tensor_type_file(r, info.n_layer, out.with_name(out.name + ".tensor-types.txt"))

    console.print(
        shlex.join(quantize_command("llama-quantize", plan, out, tf)), markup=False, highlight=False
    )
    console.print(f"[dim]tensor types: {escape(str(tf))}; predicted size {plan.file_bytes} bytes[/dim]")


@app.command("apply")
def apply(
    source: str = typer.Argument(..., help="Source GGUF (path or registered model)."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="Recipe file (.toml or .json)."),
    ctx: int = _CTX,
    kv: str = _KV,
    kld_ctx: int = typer.Option(512, "--kld-ctx", help="Context of the KLD measurement."),
    text: Path | None = typer.Option(None, "--text", help="Text for the KLD (default: the shipped one)."),
    fit: bool = typer.Option(True, "--fit/--no-fit", help="Load and fill llama-server at --ctx, measured."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="llama-bench pp512 and tg32."),
    budget_mib: float | None = typer.Option(None, "--budget-mib", help="RAM budget (default: the host's)."),
    imatrix: Path | None = _IMATRIX,
    make_imx: bool = _MAKE_IMATRIX,
    json_: bool = _JSON,
    no_wait: bool = NO_WAIT,
) -> None:
    """Quantize with the recipe and verify it: size vs preview, KLD vs the source, RAM at --ctx
    (measured), speed; stored as a result row of the new model."""
    r = load_recipe(recipe)
    cfg = _cfg(ctx, kv)
    positive("--kld-ctx", kld_ctx)
    if imatrix is not None:
        read_imatrix(imatrix)  # a bad file is refused before anything runs
    info = _source(source)
    hold_host(no_wait)
    ev = _evaluator(info, kld_ctx, text, imatrix, make_imx, _say(json_))
    plan = ev.preview(r)
    row = _verify(info, plan, cfg, kld_ctx, text, budget_mib, fit=fit, speed=speed, json_=json_, ev=ev)
    if json_:
        emit_json(row)
        return
    _render_rows([row])


def _evaluator(
    info: ModelInfo,
    kld_ctx: int,
    text: Path | None,
    imatrix: Path | None,
    make: bool,
    say: Callable[[str], None],
) -> Evaluator:
    cfg = state.config
    return quant_evaluator(cfg, ensure_runtime(cfg), info, kld_ctx=kld_ctx, text=text, imatrix=imatrix,
                           make_imx=make, say=say)  # fmt: skip


def _verify(
    info: ModelInfo,
    plan: FilePlan,
    cfg: RuntimeConfig,
    kld_ctx: int,
    text: Path | None,
    budget_mib: float | None,
    *,
    fit: bool,
    speed: bool,
    json_: bool,
    ev: Evaluator | None = None,
) -> QuantRow:
    host = probe_host()
    ev = ev or _evaluator(info, kld_ctx, text, None, False, _say(json_))
    budget = budget_mib or state.config.budgets.usable_mib(host.ram_total_mib)
    return verify_recipe(
        state.store, ev.runtime, host, info, plan, ev, cfg, budget_mib=budget,
        log_dir=state.config.data_dir / "logs", speed=speed, fit=fit, say=_say(json_),
    )  # fmt: skip


def _say(json_: bool):  # type: ignore[no-untyped-def]
    if json_:
        return lambda m: err_console.print(m, markup=False, highlight=False)
    return lambda m: console.print(f"[dim]{escape(m)}[/dim]")


def _f(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _render_rows(rows: list[QuantRow], budget_mib: float | None = None) -> None:
    tab = Table(
        title="recipes, measured (KLD vs the source on the shipped text; RAM: predicted / measured peak "
        "RSS at the target context; ± = llama.cpp's standard error or llama-bench's sd)",
        title_justify="left",
    )
    for col in ("recipe", "MiB file (pred. err)", "bpw", "KLD", "same top %", "Δppl %",
                "RAM MiB pred / meas", "fits", "pp512 t/s", "tg32 t/s"):  # fmt: skip
        tab.add_column(col, justify="left" if col == "recipe" else "right")
    for r in rows:
        tab.add_row(
            escape(str(r.recipe.get("name"))),
            f"{r.file_bytes / _MIB:.2f} ({r.size_error_pct:+.3f}%)",
            f"{r.bpw:.2f}",
            f"{r.mean_kld:.5f} ± {r.mean_kld_pm:.5f}",
            "—" if r.same_top_pct is None else f"{r.same_top_pct:.1f} ± {r.same_top_pm or 0:.1f}",
            f"{r.dppl_pct:+.2f}",
            f"{r.ram_predicted_mib:.0f} / {_f(r.ram_measured_mib, '.0f')}",
            "—" if r.fits is None else ("yes" if r.fits else f"no: {escape(r.fit_cause[:40])}"),
            "—" if r.pp_ts is None else f"{r.pp_ts:.1f} ± {r.pp_sd or 0:.1f}",
            "—" if r.tg_ts is None else f"{r.tg_ts:.1f} ± {r.tg_sd or 0:.1f}",
        )
    console.print(tab)


@app.command("solve")
def solve_cmd(
    source: str = typer.Argument(..., help="Source GGUF (path or registered model)."),
    budget_mib: float = typer.Option(..., "--budget-mib", help="RAM budget at the target context."),
    ctx: int = _CTX,
    kv: str = _KV,
    types: str = typer.Option("Q8_0,Q6_K,Q4_K,Q3_K", "--types", help="The type ladder, any order."),
    pin: list[str] = typer.Option([], "--pin", help="GROUP>=TYPE, e.g. attn>=q8_0 (repeatable)."),
    kld_ctx: int = typer.Option(512, "--kld-ctx", help="Context of the KLD measurements."),
    text: Path | None = typer.Option(None, "--text", help="Text for the KLD (default: the shipped one)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the recipe here (.toml/.json)."),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Apply the mix and the uniform types, measured."
    ),
    imatrix: Path | None = _IMATRIX,
    make_imx: bool = _MAKE_IMATRIX,
    json_: bool = _JSON,
    no_wait: bool = NO_WAIT,
) -> None:
    """Choose per-group types that fit --budget-mib at --ctx with the least measured KLD."""
    positive("--budget-mib", budget_mib)
    positive("--kld-ctx", kld_ctx)
    cfg = _cfg(ctx, kv)
    pins = [parse_pin(p) for p in pin]
    ladder = [t.strip() for t in types.split(",") if t.strip()]
    if imatrix is not None:
        read_imatrix(imatrix)
    info = _source(source)
    say = _say(json_)
    if make_imx:
        hold_host(no_wait)  # llama-imatrix runs the model
    ev = _evaluator(info, kld_ctx, text, imatrix, make_imx, say)
    host = probe_host()
    sol = solve(Path(info.path), info, budget_mib=budget_mib, cfg=cfg, ladder=ladder, evaluator=ev, pins=pins,
                cpu_flags=tuple(host.cpu_flags) or None, on_step=say,
                before_measuring=lambda: hold_host(no_wait))  # fmt: skip
    if verify:
        hold_host(no_wait)
    dest = out or (state.config.data_dir / "quant" / f"{info.name}-{sol.recipe.name}.toml")
    save_recipe(
        sol.recipe.model_copy(update={"source_sha256": info.sha256, "build": ev.runtime.build_id}), dest
    )
    rows: list[QuantRow] = []
    report = None
    if verify:
        cands = [*(uniform(t) for t in ladder), sol.recipe]
        stem = dest.with_name(dest.stem + "-candidates")
        rows, report = verify_candidates(
            state.store, ev, host, info, cands, cfg, budget_mib=budget_mib,
            log_dir=state.config.data_dir / "logs", report_stem=stem, say=say,
        )  # fmt: skip
    if json_:
        emit_json(
            {
                "recipe": sol.recipe.model_dump(mode="json"),
                "recipe_file": str(dest),
                "report": str(report) if report else None,
                "ram_predicted_mib": round(sol.ram_mib, 1),
                "budget_mib": budget_mib,
                "steps": sol.steps,
                "sensitivity": sol.sensitivity,
                "wall_s": round(sol.wall_s, 1),
                "candidates": [r.model_dump(mode="json") for r in rows],
            }
        )
        return
    console.print(
        f"solver: {len(sol.steps)} moves in {sol.wall_s:.0f} s; recipe written to {escape(str(dest))}"
    )
    for s in sol.steps:
        console.print(f"  {escape(s)}")
    if rows:
        _render_rows(rows, budget_mib)
        console.print(f"report: {escape(str(report))}")


@app.command("target")
def target_cmd(
    source: str = typer.Argument(..., help="Source GGUF (path or registered model)."),
    ctx: int = _CTX,
    kv: str = _KV,
    min_tg: float | None = typer.Option(None, "--min-tg", help="Decode t/s at the context's depth."),
    min_pp: float | None = typer.Option(None, "--min-pp", help="Prefill t/s (pp512) at the context's depth."),
    max_kld: float | None = typer.Option(None, "--max-kld", help="Mean KLD against the source."),
    max_ram_mib: float | None = typer.Option(None, "--max-ram-mib", help="Predicted RAM at the context."),
    types: str = typer.Option(
        "Q8_0,Q6_K,Q5_K,Q5_0,Q4_K,Q4_0,Q3_K,Q2_K", "--types", help="Uniform candidates."
    ),
    processes: int = typer.Option(3, "--processes", min=2, help="llama-bench processes per speed figure."),
    kld_ctx: int = typer.Option(512, "--kld-ctx", help="Context of the KLD measurement."),
    text: Path | None = typer.Option(None, "--text", help="Text for the KLD (default: the shipped one)."),
    json_: bool = _JSON,
    no_wait: bool = NO_WAIT,
) -> None:
    """The cheapest quantization (by RAM at --ctx) whose measured intervals clear every target;
    "marginal" when an interval straddles one; the closest one and what it misses otherwise."""
    cfg = _cfg(ctx, kv)
    positive("--kld-ctx", kld_ctx)
    for opt, v in (
        ("--min-tg", min_tg),
        ("--min-pp", min_pp),
        ("--max-kld", max_kld),
        ("--max-ram-mib", max_ram_mib),
    ):
        positive(opt, v)
    targets = Targets(min_tg=min_tg, min_pp=min_pp, max_kld=max_kld, max_ram_mib=max_ram_mib)
    if not targets.any():
        raise ConfigError("quant target: give at least one of --min-tg, --min-pp, --max-kld, --max-ram-mib")
    cands = [uniform(canonical_type(t, "--types")) for t in types.split(",") if t.strip()]
    info = _source(source)
    hold_host(no_wait)
    say = _say(json_)
    ev = _evaluator(info, kld_ctx, text, None, False, say)
    cands.append(keep_source(Path(info.path)))
    host = probe_host()
    chosen, rows = run_target(
        ev, info, cands, cfg, targets, processes=processes, cpu_flags=tuple(host.cpu_flags) or None, say=say
    )
    if json_:
        emit_json({"chosen": chosen.recipe.name if chosen else None, "rows": [_target_json(r) for r in rows]})
        return
    tab = Table(title=f"target at context {ctx} (95 % intervals; speed: {processes} llama-bench processes)",
                title_justify="left")  # fmt: skip
    for col in ("candidate", "RAM MiB (pred.)", "KLD", "tg t/s [CI]", "pp t/s [CI]", "verdict"):
        tab.add_column(col, justify="left" if col in ("candidate", "verdict") else "right")
    for r in rows:
        tab.add_row(
            escape(r.recipe.name),
            f"{r.ram_mib:.0f}",
            "—" if r.kld is None else f"{r.kld[0]:.4f} ± {1.96 * r.kld[1]:.4f}",
            "—" if r.tg is None else f"{r.tg.mean:.2f} [{r.tg.ci_low:.2f}, {r.tg.ci_high:.2f}]",
            "—" if r.pp is None else f"{r.pp.mean:.1f} [{r.pp.ci_low:.1f}, {r.pp.ci_high:.1f}]",
            escape(r.error or (r.verdict if not r.misses else f"{r.verdict}: {'; '.join(r.misses)}")),
        )
    console.print(tab)
    if chosen:
        console.print(f"chosen: {escape(chosen.recipe.name)} ({chosen.ram_mib:.0f} MiB at context {ctx})")
    else:
        misses = "; ".join(rows[0].misses)
        console.print(f"nothing passes; closest: {escape(rows[0].recipe.name)} — misses {escape(misses)}")


def _target_json(r: TargetRow) -> dict[str, object]:
    return {
        "recipe": r.recipe.model_dump(mode="json"),
        "ram_mib": round(r.ram_mib, 1),
        "file_bytes": r.file_bytes,
        "kld": r.kld,
        "tg": r.tg.model_dump() if r.tg else None,
        "pp": r.pp.model_dump() if r.pp else None,
        "verdict": r.verdict,
        "verdicts": r.verdicts,
        "misses": r.misses,
        "error": r.error,
    }
