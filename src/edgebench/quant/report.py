"""The candidates' report: one table (file size, RAM at the target context predicted and measured,
KLD, top-token agreement, Δppl, pp/tg) and a plot of KLD against RAM with the Pareto front and the
budget — markdown with the plot as an SVG beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from edgebench.quant.verify import QuantRow
from edgebench.report.plots import to_svg

__all__ = ["markdown", "pareto", "write_report"]

_MIB = 1024 * 1024


def pareto(rows: Sequence[QuantRow]) -> list[QuantRow]:
    """Rows no other row beats on both predicted RAM and KLD, by RAM."""
    front = [
        r
        for r in rows
        if not any(
            o.ram_predicted_mib <= r.ram_predicted_mib
            and o.mean_kld <= r.mean_kld
            and (o.ram_predicted_mib, o.mean_kld) != (r.ram_predicted_mib, r.mean_kld)
            for o in rows
        )
    ]
    return sorted(front, key=lambda r: r.ram_predicted_mib)


def _f(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown(rows: Sequence[QuantRow], budget_mib: float | None, plot_file: str | None = None) -> str:
    front = {id(r) for r in pareto(rows)}
    fits = [r for r in rows if budget_mib is None or r.ram_predicted_mib <= budget_mib]
    best = min(fits, key=lambda r: r.mean_kld, default=None)
    lines = [
        f"# Quantization candidates — {rows[0].source if rows else ''}",
        "",
        f"Target context {rows[0].ctx if rows else '?'}, KV {rows[0].kv if rows else '?'}; "
        + (f"budget {budget_mib:.0f} MiB. " if budget_mib else "")
        + "KLD, top-token agreement and Δppl against the source (llama-perplexity, ± its standard error); "
        "RAM predicted by the planner on the recipe's layout and measured as llama-server's peak RSS, "
        "loaded and filled at the target context; pp512/tg32 from llama-bench (± its sd).",
        "",
        "| recipe | file MiB | vs preview | bpw | RAM MiB pred. / meas. | KLD | same top % | Δppl % "
        "| pp512 t/s | tg32 t/s | Pareto |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for r in sorted(rows, key=lambda r: r.ram_predicted_mib):
        name = str(r.recipe.get("name")) + (" **(best that fits)**" if r is best else "")
        lines.append(
            f"| {name} | {r.file_bytes / _MIB:.2f} | {r.size_error_pct:+.3f} % | {r.bpw:.2f} "
            f"| {r.ram_predicted_mib:.0f} / {_f(r.ram_measured_mib, '.0f')} "
            f"| {r.mean_kld:.5f} ± {r.mean_kld_pm:.5f} | {_f(r.same_top_pct, '.1f')} | {r.dppl_pct:+.2f} "
            f"| {_f(r.pp_ts, '.1f')} ± {_f(r.pp_sd, '.1f')} | {_f(r.tg_ts, '.1f')} ± {_f(r.tg_sd, '.1f')} "
            f"| {'●' if id(r) in front else ''} |"
        )
    if plot_file:
        lines += ["", f"![KLD against RAM]({plot_file})"]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[QuantRow], budget_mib: float | None) -> str:
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for r in rows:
        ax.errorbar(r.ram_predicted_mib, r.mean_kld, yerr=r.mean_kld_pm, fmt="o", color="tab:blue", capsize=3)
        ax.annotate(str(r.recipe.get("name")), (r.ram_predicted_mib, r.mean_kld), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    front = pareto(rows)
    ax.plot([r.ram_predicted_mib for r in front], [r.mean_kld for r in front], "--", color="tab:green",
            label="Pareto front")  # fmt: skip
    if budget_mib:
        ax.axvline(budget_mib, color="tab:red", linestyle=":", label=f"budget {budget_mib:.0f} MiB")
    ax.set_xlabel("RAM at the target context, MiB (predicted)")
    ax.set_ylabel("mean KLD vs the source")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return to_svg(fig, "quant")


def write_report(rows: Sequence[QuantRow], budget_mib: float | None, stem: Path) -> Path:
    """stem.md and stem.svg; returns the markdown's path."""
    svg = stem.with_suffix(".svg")
    svg.write_text(plot(rows, budget_mib))
    md = stem.with_suffix(".md")
    md.write_text(markdown(rows, budget_mib, svg.name))
    return md
