"""The report: one markdown file and one self-contained HTML page from the decide stage's records.

Sections are built here as plain tables and SVG strings; the Jinja2 templates only lay them out.
A section with nothing measured stays in the report and says "not measured yet". Every number
says where it came from: table headers carry "measured" / "predicted" / "derived", and planner
figures are marked per cell.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict

from edgebench import __version__
from edgebench.decide.evidence import ModelEvidence
from edgebench.decide.rank import Ranking
from edgebench.decide.routing import Choice, Closest, Routing
from edgebench.measure.throughput import ThroughputResult

__all__ = ["SECTION_IDS", "Section", "Table", "build_sections", "render_report"]

NOT_MEASURED = "not measured yet"
SECTION_IDS = (
    "throughput",
    "memory",
    "context",
    "thread-scaling",
    "depth-scaling",
    "memory-plot",
    "quality",
    "pareto",
    "ranking",
    "model-map",
    "routing",
    "provenance",
)


class Table(BaseModel):
    model_config = ConfigDict(frozen=True)

    title: str = ""
    headers: list[str]
    rows: list[list[str]]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    intro: str = ""
    tables: list[Table] = []
    svg: str | None = None
    empty: str | None = None  # why there is nothing to show ("not measured yet: …")

    @property
    def svg_file(self) -> str:
        return f"plots/{self.id}.svg"


# ------------------------------------------------------------------------------------ formatting


def _ci(mean: float | None, low: float | None, high: float | None, fmt: str = ".2f") -> str:
    if mean is None:
        return "—"
    if low is None or high is None or low == high:
        return format(mean, fmt)
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _ts(t: ThroughputResult | None) -> str:
    if t is None:
        return NOT_MEASURED
    if not t.ok:
        return f"failed: {t.status}"
    return _ci(t.mean_ts, t.ci_low, t.ci_high)


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f}"


def _empty(sid: str, title: str, why: str, intro: str = "") -> Section:
    return Section(id=sid, title=title, intro=intro, empty=f"{NOT_MEASURED}: {why}")


# -------------------------------------------------------------------------------------- sections


def _throughput(ev: list[ModelEvidence]) -> Section:
    title = "Throughput at the best config"
    intro = (
        "Seed 000's decision table: the best measured config per model, prefill and decode mean "
        "[95 % CI] in tokens/s, the stable context, and the quality suite beside it."
    )
    if not any(e.best_pp or e.best_tg for e in ev):
        return _empty("throughput", title, "no throughput sweep stored", intro)
    rows = []
    for e in ev:
        tg, pp = e.best_tg, e.best_pp
        threads = "/".join(str(t.config.threads) for t in (pp, tg) if t is not None) or "—"
        q = e.quality
        tool = next((c for c in q.categories if c.category == "tool_call"), None) if q else None
        rows.append(
            [
                e.name,
                e.backend,
                e.quant or "—",
                threads,
                str(e.context.stable_ctx) if e.context and e.context.stable_ctx else NOT_MEASURED,
                _ts(pp),
                _ts(tg),
                f"{tg.efficiency:.0%}" if tg is not None and tg.efficiency is not None else "—",
                _ci(q.weighted, q.weighted_low, q.weighted_high) if q else NOT_MEASURED,
                _ci(tool.mean, tool.ci_low, tool.ci_high) if tool else NOT_MEASURED,
                f"{q.mean_latency_s:.1f} ± {q.latency_sd_s:.1f}" if q else NOT_MEASURED,
                tg.config.label() if tg is not None else (pp.config.label() if pp is not None else "—"),
            ]
        )
    headers = [
        "model",
        "backend",
        "quant",
        "threads pp/tg",
        "stable ctx (measured)",
        "prefill t/s (measured)",
        "decode t/s (measured)",
        "decode roofline eff. (derived)",
        "quality (measured)",
        "tool calling (measured)",
        "latency s ± sd (measured)",
        "config",
    ]
    return Section(id="throughput", title=title, intro=intro, tables=[Table(headers=headers, rows=rows)])


def _memory(ev: list[ModelEvidence], routing: Routing) -> Section:
    title = "Memory at the chosen context"
    intro = (
        "llama.cpp's buffer breakdown and the peak RSS, with its anonymous part (KV, compute, repacked "
        "weights: what only swap can take back; mmap-ed weights are file-backed and can be re-read); "
        "planner figures are marked predicted."
    )
    b = routing.budgets
    usable = b.usable_mib
    rows = []
    for e in ev:
        c, p = e.context, e.predicted_memory
        if c is not None and c.host_total_mib is not None:
            src, ctx, total, anon = "measured", c.stable_ctx, c.host_total_mib, c.anon_mib
            parts = (c.model_mib, c.kv_mib, c.compute_mib)
            load = f"{c.load_s:.1f}" if c.load_s is not None else "—"
        elif p is not None:
            src, ctx, total, anon = "predicted", p.ctx, p.host_total_mib, None
            parts = (p.model_mib, p.kv_mib, p.compute_mib)
            load = "—"
        else:
            continue
        fits = "—" if usable is None else ("yes" if total <= usable else f"no (> {usable} MiB)")
        rows.append([e.name, src, str(ctx), _mib(total), _mib(anon), *(_mib(x) for x in parts), load, fits])
    if not rows:
        return _empty("memory", title, "no context probe or memory plan stored", intro)
    headers = [
        "model",
        "source",
        "ctx",
        "host total MiB",
        "anonymous MiB (measured)",
        "model MiB",
        "KV MiB",
        "compute MiB",
        "load s (measured)",
        f"fits RAM − reserve ({usable if usable is not None else 'RAM unknown'} MiB)",
    ]
    return Section(id="memory", title=title, intro=intro, tables=[Table(headers=headers, rows=rows)])


def _context(ev: list[ModelEvidence]) -> Section:
    title = "Successful context windows"
    intro = "Contexts the probe loaded, filled and decoded within the RAM and swap budget (measured)."
    rows = []
    for e in ev:
        c = e.context
        if c is None:
            continue
        ok = [str(k) for k, v in sorted(c.tried.items()) if v]
        bad = [str(k) for k, v in sorted(c.tried.items()) if not v]
        rows.append([e.name, ", ".join(ok) or "none", ", ".join(bad) or "none", str(c.stable_ctx or "none")])
    if not rows:
        return _empty("context", title, "no stable-context probe stored", intro)
    headers = ["model", "held (measured)", "failed (measured)", "stable ctx (measured)"]
    return Section(id="context", title=title, intro=intro, tables=[Table(headers=headers, rows=rows)])


def _plot(sid: str, title: str, intro: str, svg: str | None, why: str) -> Section:
    if svg is None:
        return _empty(sid, title, why, intro)
    return Section(id=sid, title=title, intro=intro, svg=svg)


def _quality(ev: list[ModelEvidence]) -> Section:
    title = "Quality per category"
    intro = (
        "Mean pass rate per category with its clustered-bootstrap 95 % CI (measured); the weighted "
        "score and the mean request latency per model."
    )
    from edgebench.report import plots  # lazy: matplotlib only for commands that draw

    svg = plots.quality_heatmap(ev)
    if svg is None:
        return _empty("quality", title, "no quality suite has run", intro)
    rows = []
    for e in ev:
        q = e.quality
        if q is None:
            rows.append([e.name, NOT_MEASURED, "—", "—", "—", "—"])
            continue
        rows.append(
            [
                e.name,
                q.suite,
                q.mode + (" (no chat template)" if q.template_missing else ""),
                str(q.runs),
                _ci(q.weighted, q.weighted_low, q.weighted_high),
                f"{q.mean_latency_s:.1f} ± {q.latency_sd_s:.1f}",
            ]
        )
    headers = ["model", "suite", "mode", "runs", "weighted quality (measured)", "latency s ± sd (measured)"]
    return Section(
        id="quality", title=title, intro=intro, svg=svg, tables=[Table(headers=headers, rows=rows)]
    )


def _pareto(ranking: Ranking) -> Section:
    title = "Quality × speed: Pareto front"
    intro = (
        "Quality ↑, latency ↓, host RAM ↓. A model is dominated when another is at least as good on "
        "every axis and better beyond noise (CIs apart; RAM more than a few % apart) on one."
    )
    from edgebench.report import plots  # lazy: matplotlib only for commands that draw

    svg = plots.pareto_scatter(ranking)
    if svg is None:
        return _empty("pareto", title, "needs quality and latency for at least one model", intro)
    rows = [
        [
            p.name,
            f"{p.quality:.2f}",
            f"{p.latency_s:.1f}",
            f"{_mib(p.ram_mib)} ({p.ram_source})",
            "front" if p.on_front else "dominated by " + ", ".join(p.dominated_by),
            p.because,
        ]
        for p in ranking.pareto
    ]
    headers = ["model", "quality (measured)", "latency s (measured)", "host MiB", "verdict", "because"]
    return Section(id="pareto", title=title, intro=intro, svg=svg, tables=[Table(headers=headers, rows=rows)])


def _ranking(ranking: Ranking) -> Section:
    title = "Composite ranking"
    intro = f"{ranking.method}. Rows sharing a position are tied: their order there is not a claim."
    if not ranking.rows:
        return _empty("ranking", title, "no model has a quality score", intro)
    rows = [
        [
            str(r.position),
            r.name,
            r.backend,
            _ci(r.composite, r.composite_low, r.composite_high, ".3g"),
            _ci(r.quality, r.quality_low, r.quality_high),
            _ci(r.latency_s, r.latency_low, r.latency_high, ".1f"),
            r.because,
        ]
        for r in ranking.rows
    ]
    headers = [
        "position",
        "model",
        "backend",
        "composite (derived)",
        "quality (measured)",
        "latency s (measured)",
        "because",
    ]
    tables = [Table(headers=headers, rows=rows)]
    if ranking.unranked:
        tables.append(
            Table(
                title="Not ranked",
                headers=["model", "because"],
                rows=[[u.name, u.because] for u in ranking.unranked],
            )
        )
    return Section(id="ranking", title=title, intro=intro, tables=tables)


def _number(v: int | float | str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}"


def _model_map(routing: Routing) -> Section:
    title = "Model map"
    intro = "Each line was placed by the rule in its 'because', from measured figures."
    rows = [
        [
            ln.role.replace("_", " "),
            ln.model or "none",
            ", ".join(f"{k}={_number(v)}" for k, v in ln.numbers.items()) or "—",
            ln.because,
        ]
        for ln in routing.model_map
    ]
    tables = [Table(headers=["role", "model", "numbers (measured)", "because"], rows=rows)]
    if routing.bigger_not_better:
        tables.append(
            Table(
                title="Bigger and not better",
                headers=["bigger model", "smaller, faster model", "because"],
                rows=[[f.bigger, f.smaller, f.because] for f in routing.bigger_not_better],
            )
        )
    return Section(id="model-map", title=title, intro=intro, tables=tables)


def _choice_text(c: Choice | None) -> str:
    return "none" if c is None else f"{c.model} ({c.backend})"


def _closest_text(c: Closest | None) -> str:
    return "—" if c is None else f"{c.model} ({c.backend}), misses: {'; '.join(c.misses)}"


def _routing(routing: Routing) -> Section:
    title = "Routing table"
    b = routing.budgets
    intro = (
        f"Interactive budget {b.latency_s:.0f} s, quality budget {b.quality_latency_s:.0f} s, tool-call "
        f"floor {b.tool_call_floor:.2f}, context floor {b.context_floor}; scores measured on suite "
        f"{routing.suite or 'none'}."
    )
    rows = [
        [
            r.use_case.replace("_", " "),
            _choice_text(r.primary),
            _choice_text(r.backup),
            _closest_text(r.closest),
            r.why,
        ]
        for r in routing.routes
    ]
    headers = ["use case", "primary", "backup", "closest, if none qualifies", "why (measured)"]
    tables = [Table(headers=headers, rows=rows)]
    dnu = [[d.model, c.rule.replace("_", " "), c.detail] for d in routing.do_not_use for c in d.causes]
    tables.append(
        Table(
            title="Do not use",
            headers=["model", "rule", "cause (measured)"],
            rows=dnu or [["none", "—", "—"]],
        )
    )
    if routing.not_measured:
        tables.append(
            Table(
                title="Not measured yet",
                headers=["model", "missing"],
                rows=[[n.model, ", ".join(n.missing)] for n in routing.not_measured],
            )
        )
    return Section(id="routing", title=title, intro=intro, tables=tables)


def _provenance(ev: list[ModelEvidence], provenance: dict[str, Any]) -> Section:
    info = {"edgebench version": __version__, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    info.update({str(k).replace("_", " "): str(v) for k, v in provenance.items()})
    builds = sorted({t.build_id for e in ev for t in e.throughput})
    hosts = sorted({t.host_fingerprint for e in ev for t in e.throughput})
    if builds:
        info.setdefault("llama.cpp builds (from the rows)", ", ".join(builds))
    if hosts:
        info.setdefault("host fingerprints (from the rows)", ", ".join(hosts))
    tables = [Table(headers=["what", "value"], rows=[[k, v] for k, v in info.items()])]
    models = [
        [e.name, e.backend, e.quant or "—", e.sha256, "yes" if e.requantized else "no", _model_note(e)]
        for e in ev
    ]
    if models:
        heads = ["model", "backend", "quant", "sha256", "requantized", "note"]
        tables.append(Table(title="Models", headers=heads, rows=models))
    intro = "Where every number came from: the llama.cpp build, the host, the model files, this edgebench."
    return Section(id="provenance", title="Provenance", intro=intro, tables=tables)


def _model_note(e: ModelEvidence) -> str:
    if e.split_of is None:
        return ""
    note = f"{e.split_of} with its offloaded layers on RPC workers {', '.join(e.rpc)}"
    return f"{note}; quality is {e.split_of}'s, latency {e.latency_note or 'not known'}"


def build_sections(
    evidence: list[ModelEvidence], ranking: Ranking, routing: Routing, provenance: dict[str, Any]
) -> list[Section]:
    from edgebench.report import plots  # lazy: matplotlib only for commands that draw

    b = routing.budgets
    builders: list[Callable[[], Section]] = [
        lambda: _throughput(evidence),
        lambda: _memory(evidence, routing),
        lambda: _context(evidence),
        lambda: _plot(
            "thread-scaling",
            "Thread scaling",
            "Prefill and decode vs threads, per KV cache type (depth 0); models swept at two or more "
            "thread counts.",
            plots.thread_scaling(evidence),
            "needs successful rows at two or more thread counts",
        ),
        lambda: _plot(
            "depth-scaling",
            "Decode speed vs context depth",
            "How decode slows as the KV cache fills.",
            plots.depth_scaling(evidence),
            "needs decode rows at two or more depths (sweep --depth 0,4096)",
        ),
        lambda: _plot(
            "memory-plot",
            "Memory vs the RAM budget",
            "Model weights, KV cache and compute buffers stacked against RAM − reserve.",
            plots.memory_bars(evidence, b.ram_total_mib, b.ram_reserve_mib),
            "no context probe or memory plan stored",
        ),
        lambda: _quality(evidence),
        lambda: _pareto(ranking),
        lambda: _ranking(ranking),
        lambda: _model_map(routing),
        lambda: _routing(routing),
        lambda: _provenance(evidence, provenance),
    ]
    sections = [f() for f in builders]
    assert tuple(s.id for s in sections) == SECTION_IDS
    return sections


# ---------------------------------------------------------------------------------------- render


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("edgebench.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["mdcell"] = _md_cell
    return env


def render_report(
    evidence: list[ModelEvidence],
    ranking: Ranking,
    routing: Routing,
    provenance: dict[str, Any],
    out_dir: Path,
) -> tuple[Path, Path]:
    """Write report.md (+ plots/*.svg beside it) and report.html (self-contained) into out_dir."""
    sections = build_sections(evidence, ranking, routing, provenance)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_dir = out_dir / "plots"
    for s in sections:
        if s.svg is not None:
            plot_dir.mkdir(exist_ok=True)
            (out_dir / s.svg_file).write_text(s.svg, encoding="utf-8")
    env = _env()
    ctx = {"sections": sections, "version": __version__, "suite": ranking.suite, "models": len(evidence)}
    md, html = out_dir / "report.md", out_dir / "report.html"
    md.write_text(env.get_template("report.md.j2").render(ctx), encoding="utf-8")
    html.write_text(env.get_template("report.html.j2").render(ctx), encoding="utf-8")
    return md, html
