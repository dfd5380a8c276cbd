"""`edgebench kv`: the KV-cache lab — what each KV quantization costs on this model, measured."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgebench.cli._args import positive
from edgebench.cli._common import NO_WAIT, console, emit_json, err_console, hold_host, state
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.kvlab.lab import (
    DEFAULT_NATIVE,
    DEFAULT_SIMULATED,
    LabResult,
    LabRow,
    load_text,
    parse_native,
    run_lab,
)
from edgebench.kvlab.schemes import parse_scheme
from edgebench.models.registry import resolve_model
from edgebench.setup import ensure_models, ensure_runtime

__all__ = ["register", "render_lab"]


def _list(opt: str, value: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{opt} {value!r}: give a comma-separated list")
    return items


def kv(
    model: str = typer.Argument(None, help="Model (default: the first configured one)."),
    ctx: int = typer.Option(512, "--ctx", "-c", help="Context the cache is captured and scored at."),
    positions: int = typer.Option(64, "--positions", help="Text positions scored per scheme."),
    simulated: str = typer.Option(",".join(DEFAULT_SIMULATED), "--simulated", help="Simulated schemes."),
    native: str = typer.Option(
        ",".join(DEFAULT_NATIVE), "--native", help="Native types (K/V pairs: q8_0/q4_0)."
    ),
    sensitivity: str = typer.Option("q4_0", "--sensitivity", help="Scheme for the per-layer pass."),
    perplexity: bool = typer.Option(True, "--perplexity/--no-perplexity", help="llama-perplexity KLD."),
    step: int = typer.Option(1, "--step", help="Tokens per round of the token-by-token fill (1 = exact)."),
    text: Path | None = typer.Option(None, "--text", help="Text file (default: the shipped one)."),
    budget_mib: float | None = typer.Option(None, "--budget-mib", help="RAM budget for the context column."),
    fa: str = typer.Option("on", "--fa", help="Flash attention: on or off."),
    threads: int | None = typer.Option(
        None, "--threads", "-t", min=1, help="Threads (default: the cores no other process keeps busy)."
    ),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
    no_wait: bool = NO_WAIT,
) -> None:
    """Capture this model's real f16 KV cache and measure each KV type — llama.cpp's own (native)
    and numpy simulations injected into the cache (TurboQuant, KIVI, hybrids) — against it."""
    cfg, store = state.config, state.store
    if fa not in ("on", "off"):
        raise ConfigError(f"--fa {fa!r}: on or off")
    for s in [*_list("--simulated", simulated), sensitivity]:
        parse_scheme(s)
    parse_native(_list("--native", native))
    positive("--budget-mib", budget_mib)
    body = load_text(text) if text else None
    info = resolve_model(store, model) if model else None
    hold_host(no_wait)
    runtime = ensure_runtime(cfg)
    info = info or ensure_models(cfg, store)[0]
    host = probe_host()
    budget = budget_mib or cfg.budgets.usable_mib(host.ram_total_mib)
    say = (
        (lambda m: err_console.print(m, markup=False, highlight=False))
        if json_
        else (lambda m: console.print(f"[dim]{escape(m)}[/dim]"))
    )
    res = run_lab(
        runtime,
        info,
        host_fingerprint=host.fingerprint,
        ctx=ctx,
        text=body,
        positions=positions,
        simulated=_list("--simulated", simulated),
        native=_list("--native", native),
        perplexity=perplexity,
        sensitivity_scheme=sensitivity,
        step=step,
        budget_mib=budget,
        flash_attn=fa,  # type: ignore[arg-type]  # checked above
        threads=threads,
        log_dir=cfg.data_dir / "logs",
        emit=say,
    )
    out = cfg.data_dir / "kvlab" / f"{info.sha256[:12]}-ctx{ctx}-fa{fa}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res.model_dump(mode="json"), indent=1))
    from edgebench.kvlab.report import write_report  # lazy: matplotlib only for commands that draw

    md, _svg = write_report(res, out.with_suffix(""))
    if json_:
        emit_json(res)
        return
    render_lab(res)
    console.print(f"saved: {out}\nreport: {md}")


def _f(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _row(r: LabRow) -> list[str]:
    k = r.kld
    ppl = r.ppl
    return [
        escape(r.method),
        r.source + ("" if r.validated is not False else " (unvalidated)"),
        f"{r.bits:.2f}",
        f"{r.vs_f16:.2f}× / {r.vs_f32:.2f}×",
        _f(r.rel_mse_k, ".2e") + " / " + _f(r.rel_mse_v, ".2e") if r.rel_mse_k is not None else "—",
        f"{k.mean_kld:.5f} ± {k.kld_se:.5f}" if k else "—",
        f"{k.same_top_pct:.1f} ± {k.same_top_se:.1f}" if k else "—",
        f"{ppl.mean_kld:.5f} / {ppl.dppl_pct:+.2f}%" if ppl else "—",
        str(r.ctx_fit) if r.ctx_fit is not None else "—",
    ]


def render_lab(res: LabResult) -> None:
    t = Table(
        title=(
            f"KV lab — {escape(res.model)}, context {res.ctx}, {res.positions} positions scored "
            f"(KLD vs the f16 cache, top-{res.n_probs} + rest). native: llama.cpp's kernels; native "
            "cache: the cache llama.cpp quantized, read by an f16 server; simulated: a numpy scheme "
            "filled into an f16 cache token by token"
        ),
        title_justify="left",
    )
    for col in (
        "method",
        "source",
        "bits/el",
        "vs f16 / f32",
        "rel. MSE K / V",
        "KLD",
        "top-1 %",
        "ppl KLD / ΔPPL",
        f"ctx in {res.budget_mib:.0f} MiB",
    ):
        t.add_column(col, justify="left" if col in ("method", "source") else "right")
    for r in res.rows:
        t.add_row(*_row(r))
    console.print(t)
    for v in res.validations:
        console.print(
            f"injection check: simulated {v.simulated} KLD {v.kld_simulated:.5f} vs native {v.native} "
            f"{v.kld_native:.5f} (paired diff {v.diff:+.5f} ± {v.diff_se:.5f}): "
            + ("agree" if v.agree else "[red]disagree[/red]")
        )
    worst = sorted(res.sensitivity.items(), key=lambda kv: -kv[1])[:5]
    console.print(
        f"most sensitive layers at {res.sensitivity_scheme}: "
        + ", ".join(f"{il} ({k:.5f})" for il, k in worst)
    )
    console.print(f"restore of the unmodified cache: max KLD {res.roundtrip_kld_max:g} (exact when 0)")
    console.print(f"recommendation: {escape(res.recommendation)}")
    for n in res.notes:
        console.print(f"[yellow]not measured:[/yellow] {escape(n)}")
    console.print(f"wall time {res.wall_s:.0f} s")


def register(app: typer.Typer) -> None:
    app.command("kv")(kv)
