"""Report plots as inline SVG strings (matplotlib, text kept as text: `svg.fonttype = none`).

Each function returns None when it has nothing measured to draw, so the report can say "not
measured yet" instead of showing an empty frame. Data artists carry a gid starting with "data-"
(an SVG group id), which is how tests find real data marks. Figures are built with the OO API
(`Figure`, no pyplot): no global backend state, no GUI.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from edgebench.decide.evidence import ModelEvidence
from edgebench.decide.rank import Ranking
from edgebench.measure.throughput import ThroughputResult

__all__ = ["depth_scaling", "memory_bars", "pareto_scatter", "quality_heatmap", "thread_scaling", "to_svg"]

_MEASURED = "#1f77b4"
_GREY = "#9a9a9a"


def to_svg(fig: Figure, prefix: str) -> str:
    """The figure as one `<svg>` element; every id is prefixed so several can share an HTML page."""
    buf = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\bid="', f'id="{prefix}-', text)
    text = text.replace('href="#', f'href="#{prefix}-').replace("url(#", f"url(#{prefix}-")
    return text


def _kv(t: ThroughputResult) -> str:
    k, v = t.config.cache_type_k, t.config.cache_type_v
    return k if k == v else f"{k}/{v}"


def _err(mean: list[float], low: list[float], high: list[float]) -> np.ndarray:
    m = np.asarray(mean)
    return np.vstack([np.maximum(m - np.asarray(low), 0), np.maximum(np.asarray(high) - m, 0)])


def _ci(t: ThroughputResult) -> tuple[float, float, float]:
    assert t.mean_ts is not None
    lo = t.ci_low if t.ci_low is not None else t.mean_ts
    hi = t.ci_high if t.ci_high is not None else t.mean_ts
    return t.mean_ts, lo, hi


def _best_by(rows: list[ThroughputResult], key: str) -> dict[int, ThroughputResult]:
    """At each value of `key` (threads / depth), the best row over every other setting."""
    best: dict[int, ThroughputResult] = {}
    for t in rows:
        k = t.config.threads if key == "threads" else t.depth
        cur = best.get(k)
        if cur is None or (t.mean_ts or 0.0) > (cur.mean_ts or 0.0):
            best[k] = t
    return dict(sorted(best.items()))


def _series(ax: Axes, xs: list[int], rows: list[ThroughputResult], label: str, gid: str) -> None:
    cis = [_ci(t) for t in rows]
    means = [c[0] for c in cis]
    cont = ax.errorbar(
        xs,
        means,
        yerr=_err(means, [c[1] for c in cis], [c[2] for c in cis]),
        marker="o",
        capsize=3,
        label=label,
    )
    cont.lines[0].set_gid(gid)


def thread_scaling(evidence: list[ModelEvidence]) -> str | None:
    """pp and tg (depth 0) vs threads, one line per KV type, one row of panels per model.

    Only models measured at two or more thread counts are drawn: one point is not a scaling curve.
    """
    models = []
    for e in evidence:
        rows = [t for t in e.throughput if t.ok and t.depth == 0]
        if len({t.config.threads for t in rows}) >= 2:
            models.append((e.name, rows))
    if not models:
        return None
    fig = Figure(figsize=(8, 2.6 * len(models) + 0.6), layout="constrained")
    axes = fig.subplots(len(models), 2, squeeze=False)
    for r, (name, rows) in enumerate(models):
        for c, kind in enumerate(("pp", "tg")):
            ax = axes[r][c]
            by_kv: dict[str, list[ThroughputResult]] = defaultdict(list)
            for t in rows:
                if t.kind == kind:
                    by_kv[_kv(t)].append(t)
            for i, (kv, ts) in enumerate(sorted(by_kv.items())):
                best = _best_by(ts, "threads")
                _series(ax, list(best), list(best.values()), f"KV {kv}", f"data-threads-{r}-{kind}-{i}")
            ax.set_title(f"{name}: {kind} (measured)", fontsize=9)
            ax.set_xlabel("threads")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "1.5 threads" ticks
            ax.set_ylabel("tokens/s")
            if by_kv:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Thread scaling: best over other settings, mean with 95 % CI", fontsize=10)
    return to_svg(fig, "threads")


def depth_scaling(evidence: list[ModelEvidence]) -> str | None:
    """Decode t/s vs context depth, one line per model."""
    series = []
    for e in evidence:
        rows = [t for t in e.throughput if t.ok and t.kind == "tg"]
        # The winning decode config across depths when it was swept there, else the best at each.
        same = [t for t in rows if e.best_tg is not None and t.config == e.best_tg.config]
        best = _best_by(same, "depth")
        if len(best) < 2:
            best = _best_by(rows, "depth")
        if len(best) >= 2:
            series.append((e.name, best))
    if not series:
        return None
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, best) in enumerate(series):
        _series(ax, list(best), list(best.values()), name, f"data-depth-{i}")
    ax.set_xlabel("context depth (tokens already in the KV cache)")
    ax.set_ylabel("decode tokens/s")
    ax.set_title("Decode speed vs context depth (measured, mean with 95 % CI)", fontsize=10)
    ax.legend(fontsize=7)
    return to_svg(fig, "depth")


def memory_bars(evidence: list[ModelEvidence], ram_total_mib: int | None, reserve_mib: int) -> str | None:
    """Stacked model / KV / compute / other MiB per model against the RAM budget."""
    bars = []
    for e in evidence:
        c, p = e.context, e.predicted_memory
        if c is not None and c.host_total_mib is not None:
            parts = (c.model_mib or 0.0, c.kv_mib or 0.0, c.compute_mib or 0.0)
            bars.append((e.name, parts, c.host_total_mib, False))
        elif p is not None:
            bars.append((e.name, (p.model_mib, p.kv_mib, p.compute_mib), p.host_total_mib, True))
    if not bars:
        return None
    fig = Figure(figsize=(7, 0.5 * len(bars) + 2.2), layout="constrained")
    ax = fig.add_subplot()
    names = [f"{n} ({'predicted' if pred else 'measured'})" for n, _, _, pred in bars]
    y = np.arange(len(bars))
    left = np.zeros(len(bars))
    labels = ("model", "KV cache", "compute", "other (RSS beyond buffers)")
    colors = ("#4c72b0", "#55a868", "#c44e52", "#c8c8c8")
    for j, (label, color) in enumerate(zip(labels, colors, strict=True)):
        if j < 3:
            width = np.array([parts[j] for _, parts, _, _ in bars])
        else:
            width = np.array([max(total - sum(parts), 0.0) for _, parts, total, _ in bars])
        cont = ax.barh(y, width, left=left, color=color, label=label)
        for k, patch in enumerate(cont.patches):
            patch.set_gid(f"data-mem-{j}-{k}")
            if bars[k][3]:
                patch.set_hatch("//")
        left += width
    if ram_total_mib is not None:
        ax.axvline(ram_total_mib - reserve_mib, color="black", linestyle="--", label="RAM − reserve")
        ax.axvline(ram_total_mib, color="black", linestyle=":", label="RAM total")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MiB (hatched = predicted by the planner)")
    ax.set_title("Host memory at the chosen context", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return to_svg(fig, "memory")


def quality_heatmap(evidence: list[ModelEvidence]) -> str | None:
    """Category pass rate per model (measured), each cell annotated with its 95 % CI."""
    scored = [e for e in evidence if e.quality is not None]
    if not scored:
        return None
    cats: list[str] = []
    for e in scored:
        assert e.quality is not None
        cats += [c.category for c in e.quality.categories if c.category not in cats]
    grid = np.full((len(scored), len(cats)), np.nan)
    notes: dict[tuple[int, int], str] = {}
    for i, e in enumerate(scored):
        assert e.quality is not None
        for c in e.quality.categories:
            j = cats.index(c.category)
            grid[i, j] = c.mean
            notes[(i, j)] = f"{c.mean:.2f}\n[{c.ci_low:.2f}, {c.ci_high:.2f}]"
    fig = Figure(figsize=(1.3 * len(cats) + 3, 0.6 * len(scored) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=0, vmax=1, edgecolors="white")
    mesh.set_gid("data-quality-cells")
    for i in range(len(scored)):
        for j in range(len(cats)):
            text = notes.get((i, j), "not\nmeasured")
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(np.arange(len(cats)) + 0.5, cats, fontsize=8, rotation=20)
    ax.set_yticks(np.arange(len(scored)) + 0.5, [e.name for e in scored], fontsize=8)
    ax.invert_yaxis()
    fig.colorbar(mesh, ax=ax, label="pass rate (measured)")
    ax.set_title("Quality per category: mean pass rate [95 % CI]", fontsize=10)
    return to_svg(fig, "quality")


def pareto_scatter(ranking: Ranking) -> str | None:
    """Weighted quality vs mean latency with CIs on both axes; the front in colour, dominated in grey."""
    if not ranking.rows:
        return None
    front = {p.name for p in ranking.pareto if p.on_front}
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, r in enumerate(ranking.rows):
        on = r.name in front
        cont = ax.errorbar(
            [r.latency_s],
            [r.quality],
            xerr=_err([r.latency_s], [r.latency_low], [r.latency_high]),
            yerr=_err([r.quality], [r.quality_low], [r.quality_high]),
            marker="o" if on else "s",
            color=_MEASURED if on else _GREY,
            capsize=3,
        )
        cont.lines[0].set_gid(f"data-pareto-{i}")
        ax.annotate(r.name, (r.latency_s, r.quality), textcoords="offset points", xytext=(5, 5), fontsize=7)
    lats = [r.latency_s for r in ranking.rows]
    if min(lats) > 0 and max(lats) / min(lats) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("mean latency per request, s (measured, 95 % t-CI)")
    ax.set_ylabel("weighted quality (measured, 95 % CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Quality × speed: Pareto front (circles) and dominated models (grey squares)", fontsize=10)
    if ax.get_xscale() == "linear":
        ax.set_xlim(left=0)
    return to_svg(fig, "pareto")
