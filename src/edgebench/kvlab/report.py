"""The KV lab's report: one table per model in seed 000's shape (method | bits | compression | MSE |
KLD | top-1 agreement | context in the budget), the injection check, the recommendation, and a
plot of KLD against bits per element — markdown with the plot as an SVG beside it."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from edgebench.kvlab.lab import LabResult, LabRow
from edgebench.report.plots import to_svg

__all__ = ["kld_plot", "markdown", "write_report"]

_MARK = {"native": ("o", "tab:blue"), "native cache": ("s", "tab:green"), "simulated": ("^", "tab:orange")}


def _cell(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _line(r: LabRow) -> str:
    k = r.kld
    mse = f"{_cell(r.rel_mse_k, '.2e')} / {_cell(r.rel_mse_v, '.2e')}" if r.rel_mse_k is not None else "—"
    ppl = f"{r.ppl.mean_kld:.5f}, ΔPPL {r.ppl.dppl_pct:+.2f} %" if r.ppl else "—"
    source = r.source + (" (unvalidated)" if r.validated is False else "")
    cells = [
        r.method + (f" `{r.kv_layers}`" if r.kv_layers else ""),
        source,
        f"{r.bits:.2f}",
        f"{r.vs_f16:.2f}× / {r.vs_f32:.2f}×",
        mse,
        f"{k.mean_kld:.5f} ± {k.kld_se:.5f}" if k else "—",
        f"{k.same_top_pct:.1f} ± {k.same_top_se:.1f}" if k else "—",
        ppl,
        str(r.ctx_fit) if r.ctx_fit is not None else "—",
        _cell(r.kv_mib_per_1k, ".2f"),
        f"{r.decode_ts:.1f} ± {r.decode_sd:.1f}"
        if r.decode_ts is not None and r.decode_sd is not None
        else "—",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown(res: LabResult, plot_file: str | None = None) -> str:
    head = (
        "| method | source | bits/element | compression vs f16 / f32 | rel. MSE K / V | KLD (server) | "
        f"top-1 agreement % | llama-perplexity KLD | context in {res.budget_mib:.0f} MiB (predicted) | "
        f"KV MiB per 1k tokens (measured) | decode t/s at depth {res.ctx // 2} (measured) |"
    )
    out = [
        f"# KV-cache lab — {res.model}",
        "",
        f"Context {res.ctx} ({res.tokens} tokens of the text, sha256 {res.text_sha256[:12]}), the "
        f"distributions after the last {res.positions} positions compared with the f16 cache's (KLD over "
        f"the top {res.n_probs} tokens plus the rest; ± one standard error over positions). "
        "native: llama.cpp's kernels (`-ctk/-ctv`); native cache: the cache llama.cpp quantized, read by "
        f"an f16 server; simulated: a numpy scheme filled into an f16 cache token by token ({res.step} "
        "per round). Model sha256 "
        f"{res.model_sha256[:12]}, llama.cpp {res.build_id}, host {res.host_fingerprint}.",
        "",
        head,
        "|" + "---|" * 11,
        *(_line(r) for r in res.rows),
        "",
        "Injection check (simulated vs the cache llama.cpp wrote):",
        "",
        *(
            f"- {v.simulated} vs {v.native}: {v.kld_simulated:.5f} vs {v.kld_native:.5f}, paired "
            f"difference {v.diff:+.5f} ± {v.diff_se:.5f} — {'agree' if v.agree else 'DISAGREE'}"
            for v in res.validations
        ),
        "",
        f"Restoring the unmodified cache: max KLD {res.roundtrip_kld_max:g} (0 = exact).",
        "",
        f"Per-layer sensitivity ({res.sensitivity_scheme}, one layer at a time, quantized once): "
        + ", ".join(f"{il}: {k:.5f}" for il, k in sorted(res.sensitivity.items())),
        "",
        "Mainline llama.cpp has no per-layer KV types: the hybrids are simulated only; their "
        "`--kv-layers` spec sizes them with `edgebench plan`.",
        "",
        f"**Recommendation:** {res.recommendation}",
        "",
        f"Wall time of the lab run: {res.wall_s:.0f} s.",
        *(f"- not measured: {n}" for n in res.notes),
    ]
    if plot_file:
        out += ["", f"![KLD vs bits per element]({plot_file})"]
    return "\n".join(out) + "\n"


def kld_plot(res: LabResult) -> str | None:
    rows = [r for r in res.rows if r.kld is not None and r.kld.mean_kld > 0]
    if not rows:
        return None
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for source, (marker, color) in _MARK.items():
        mine = [r for r in rows if r.source == source]
        if not mine:
            continue
        ax.errorbar(
            [r.bits for r in mine],
            [r.kld.mean_kld for r in mine if r.kld],
            yerr=[r.kld.kld_se for r in mine if r.kld],
            fmt=marker,
            color=color,
            label=source,
            capsize=3,
        )
        for r in mine:
            ax.annotate(r.method.split(" (")[0], (r.bits, r.kld.mean_kld if r.kld else 0), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("bits per element (scales included)")
    ax.set_ylabel("mean KLD vs the f16 cache")
    ax.set_title(f"{res.model}: KV cache quality vs size (context {res.ctx})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return to_svg(fig, "kvlab")


def write_report(res: LabResult, stem: Path) -> tuple[Path, Path | None]:
    """`stem`.md and, when there is something to plot, `stem`.svg beside it."""
    svg = kld_plot(res)
    svg_file = stem.with_suffix(".svg") if svg else None
    if svg and svg_file:
        svg_file.write_text(svg, encoding="utf-8")
    md = stem.with_suffix(".md")
    md.write_text(markdown(res, svg_file.name if svg_file else None), encoding="utf-8")
    return md, svg_file
