"""Boards side by side: per model (by sha256, whatever each board calls the file), each host's
best decode and prefill with their 95 % CI and config, its stable context and its quality pass
rate — from the rows in one store (this board's and imported bundles'), never mixed across hosts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgebench.measure.context import ContextTrial
from edgebench.measure.throughput import ThroughputResult
from edgebench.quality.runner import QualityResult
from edgebench.stats import wilson
from edgebench.store import Store

__all__ = ["Board", "Fleet", "fleet_html", "fleet_leaderboard", "fleet_markdown"]


@dataclass
class Cell:
    tg: ThroughputResult | None = None
    pp: ThroughputResult | None = None
    stable_ctx: int | None = None
    passed: int = 0
    graded: int = 0
    suite: str | None = None


@dataclass
class Board:
    fingerprint: str
    label: str  # board or CPU, cores, RAM — from the host record when the store has it


@dataclass
class Fleet:
    boards: list[Board]
    models: list[tuple[str, str]]  # (sha256, name)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (sha256, fingerprint)


def _label(fp: str, info: dict[str, Any] | None) -> str:
    if not info:
        return f"host {fp[:10]}"
    what = info.get("board") or info.get("cpu_model") or "?"
    return f"{what}, {info.get('n_cpus', '?')} CPUs, {round(info.get('ram_total_mib', 0) / 1024)} GiB"


def fleet_leaderboard(store: Store) -> Fleet:
    hosts = store.hosts()
    cells: dict[tuple[str, str], Cell] = {}
    names: dict[str, str] = {}
    seen: set[str] = set()

    def cell(sha: str, fp: str) -> Cell:
        seen.add(fp)
        return cells.setdefault((sha, fp), Cell())

    for r in store.rows("throughput"):
        try:
            t = ThroughputResult.model_validate(r.record)
        except ValidationError:
            continue  # a row of an older record version: not comparable
        if not t.ok or t.transient or t.config.rpc:
            continue  # split over RPC workers: not that host's own speed
        names.setdefault(t.model_sha256, t.model)
        c = cell(t.model_sha256, r.provenance.host_fingerprint)
        best = c.tg if t.kind == "tg" else c.pp
        if best is None or (t.mean_ts or 0) > (best.mean_ts or 0):
            setattr(c, "tg" if t.kind == "tg" else "pp", t)
    for r in store.rows("context"):
        try:
            ct = ContextTrial.model_validate(r.record)
        except ValidationError:
            continue
        if ct.ok and not ct.transient and not (r.params.get("runtime") or {}).get("rpc"):
            c = cell(r.provenance.model_sha256, r.provenance.host_fingerprint)
            c.stable_ctx = max(c.stable_ctx or 0, ct.ctx)
            names.setdefault(r.provenance.model_sha256, ct.model)
    counts: dict[tuple[str, str, str], list[int]] = {}
    for r in store.rows("quality"):
        try:
            q = QualityResult.model_validate(r.record)
        except ValidationError:
            continue
        if q.sample != 0:
            continue  # the greedy replies only: one per item and variant
        k = (r.provenance.model_sha256, r.provenance.host_fingerprint, q.suite)
        pc = counts.setdefault(k, [0, 0])
        pc[0] += q.passed
        pc[1] += 1
        names.setdefault(r.provenance.model_sha256, q.target)
    for (sha, fp, suite), (p, n) in counts.items():
        c = cell(sha, fp)
        if n > c.graded:  # the suite this host ran most on this model
            c.passed, c.graded, c.suite = p, n, suite
    boards = [Board(fp, _label(fp, hosts.get(fp))) for fp in sorted(seen)]
    models = sorted(names.items(), key=lambda kv: kv[1])
    return Fleet(boards, models, cells)


def _ts(t: ThroughputResult | None) -> str:
    if t is None or t.mean_ts is None:
        return "—"
    ci = f" [{t.ci_low:.1f}, {t.ci_high:.1f}]" if t.ci_low is not None and t.ci_high is not None else ""
    return f"{t.mean_ts:.1f}{ci} (t{t.config.threads}, {t.config.cache_type_k})"


def _q(c: Cell) -> str:
    if not c.graded:
        return "—"
    lo, hi = wilson(c.passed, c.graded)
    return f"{c.passed}/{c.graded} [{100 * lo:.0f}–{100 * hi:.0f} %] ({c.suite})"


def _rows(f: Fleet) -> list[list[str]]:
    out = []
    for sha, name in f.models:
        for b in f.boards:
            c = f.cells.get((sha, b.fingerprint))
            if c is None:
                continue
            ctx = str(c.stable_ctx) if c.stable_ctx else "—"
            out.append([name, b.label, _ts(c.tg), _ts(c.pp), ctx, _q(c)])
    return out


_HEAD = [
    "model",
    "host",
    "tg t/s [95 % CI] (config)",
    "pp t/s [95 % CI] (config)",
    "stable context",
    "quality",
]


def fleet_markdown(f: Fleet) -> str:
    lines = [
        "# Fleet: boards side by side",
        "",
        f"{len(f.boards)} hosts, {len(f.models)} models; each cell is measured on that host alone.",
        "",
        "| " + " | ".join(_HEAD) + " |",
        "|" + "---|" * len(_HEAD),
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(f)]
    lines += ["", "Hosts: " + "; ".join(f"`{b.fingerprint[:16]}` {b.label}" for b in f.boards)]
    return "\n".join(lines) + "\n"


def fleet_html(f: Fleet) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEAD)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _rows(f))
    hosts = "".join(f"<li><code>{esc(b.fingerprint)}</code> {esc(b.label)}</li>" for b in f.boards)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgebench fleet</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px}</style></head><body><h1>Fleet: boards side by side</h1>"
        f"<table id='fleet'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Hosts</h2><ul id='hosts'>{hosts}</ul></body></html>\n"
    )


def write_fleet_report(store: Store, out_dir: Path) -> tuple[Fleet, Path, Path]:
    """fleet.md and fleet.html in `out_dir`; the fleet (no hosts: nothing written)."""
    f = fleet_leaderboard(store)
    md, page = out_dir / "fleet.md", out_dir / "fleet.html"
    if f.boards:
        out_dir.mkdir(parents=True, exist_ok=True)
        md.write_text(fleet_markdown(f))
        page.write_text(fleet_html(f))
    return f, md, page
