"""`edgebench rank`, `edgebench route`, `edgebench report`: decisions from stored measurements."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgebench import __version__
from edgebench.cli._args import out_dir
from edgebench.cli._common import console, emit_json, state
from edgebench.config import Config
from edgebench.decide.evidence import ModelEvidence
from edgebench.decide.export import write_routing
from edgebench.decide.gather import gather
from edgebench.decide.rank import Ranking, rank
from edgebench.decide.route import route
from edgebench.decide.routing import Routing
from edgebench.errors import ConfigError
from edgebench.host.probe import HostInfo, probe_host
from edgebench.quality.runner import STAGE as QUALITY_STAGE
from edgebench.quality.suite import BUILTIN_DIR
from edgebench.report import render_report
from edgebench.runtime.locate import Runtime
from edgebench.setup import locate_quietly
from edgebench.store import Store

__all__ = ["decide_all", "register", "render_ranking", "render_routing"]


def decide_all(
    cfg: Config,
    store: Store,
    host: HostInfo,
    suite: str | None,
    runtime: Runtime | None = None,
    out_dir: Path | None = None,
) -> tuple[list[ModelEvidence], Ranking, Routing, Path, Path, Path]:
    """Gather → rank → route → routing file → report, the tail of the pipeline."""
    ev = gather(cfg, store, suite)
    ranking = rank(ev, cfg.budgets)
    routing = route(ev, cfg.budgets, ram_total_mib=host.ram_total_mib, ranking=ranking)
    out = out_dir or cfg.data_dir / "report"
    routing_json, _ = write_routing(routing, out)
    prov: dict[str, Any] = {
        "host_fingerprint": host.fingerprint,
        "host": f"{host.cpu_model}, {host.ram_total_mib} MiB",
        "edgebench_version": __version__,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if runtime is not None:
        prov["llama_cpp_build"] = runtime.build_id
        prov["llama_cpp_preset"] = runtime.preset or "(not built by edgebench)"
    md, html = render_report(ev, ranking, routing, prov, out)
    return ev, ranking, routing, routing_json, md, html


def render_ranking(r: Ranking) -> None:
    t = Table(title=f"ranking on suite {r.suite or '—'}: {r.method}", title_justify="left")
    for col in ("#", "model", "composite [95 % CI]", "quality [95 % CI]", "mean wall", "why"):
        t.add_column(col)
    for row in r.rows:
        t.add_row(
            str(row.position),
            row.name,
            f"{row.composite:.3f} [{row.composite_low:.3f}, {row.composite_high:.3f}]",
            f"{row.quality:.3f} [{row.quality_low:.3f}, {row.quality_high:.3f}]",
            f"{row.latency_s:.1f} s",
            row.because,
        )
    console.print(t)
    for g in r.groups:
        if len(g.members) > 1:
            console.print(f"tied at #{g.position}: {', '.join(g.members)} — {g.because}", highlight=False)
    for u in r.unranked:
        console.print(f"unranked: {u.name}: {u.because}", highlight=False)


def render_routing(r: Routing) -> None:
    t = Table(title="model map (rules over measured data)", title_justify="left")
    for col in ("role", "model", "because"):
        t.add_column(col)
    for line in r.model_map:
        t.add_row(line.role, line.model or "—", line.because)
    console.print(t)
    t = Table(title="routing table", title_justify="left")
    for col in ("use case", "primary", "backup", "why"):
        t.add_column(col)
    for ro in r.routes:
        t.add_row(
            ro.use_case,
            ro.primary.model if ro.primary else "—",
            ro.backup.model if ro.backup else "—",
            ro.why,
        )
    console.print(t)
    for d in r.do_not_use:
        console.print(
            f"do not use {d.model}: " + "; ".join(f"{c.rule}: {c.detail}" for c in d.causes), highlight=False
        )
    for f in r.bigger_not_better:
        console.print(f"bigger and not better: {f.because}", highlight=False)


def _check_suite(cfg: Config, store: Store, suite: str | None) -> None:
    """A suite to rank on is one that exists or one with stored results (it may since be gone)."""
    if suite is None:
        return
    dirs = [*cfg.run.suite_dirs, BUILTIN_DIR]
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.iterdir() if p.suffix in (".yaml", ".yml")})
    if suite in known or any(r.record.get("suite") == suite for r in store.rows(QUALITY_STAGE)):
        return
    raise ConfigError(
        f"--suite {suite!r}: no such suite and no stored results for it (suites: {', '.join(known)})"
    )


def rank_cmd(
    suite: str | None = typer.Option(None, "--suite", "-s", help="Quality suite to rank on."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Composite quality × speed ranking with CIs, ties and the Pareto front (from stored results)."""
    cfg, store = state.config, state.store
    _check_suite(cfg, store, suite)
    r = rank(gather(cfg, store, suite), cfg.budgets)
    if json_:
        emit_json(r)
        return
    render_ranking(r)


def route_cmd(
    suite: str | None = typer.Option(None, "--suite", "-s", help="Quality suite to route on."),
    out: Path | None = typer.Option(None, "--out", help="Directory for routing.json/.toml."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Model map and routing table by explicit rules; writes routing.json and routing.toml."""
    cfg, store = state.config, state.store
    _check_suite(cfg, store, suite)
    out_dir("--out", out)
    host = probe_host()
    ev = gather(cfg, store, suite)
    r = route(ev, cfg.budgets, ram_total_mib=host.ram_total_mib)
    path, toml = write_routing(r, out or cfg.data_dir / "report")
    if json_:
        emit_json({"routing": r, "files": [str(path), str(toml)]})
        return
    render_routing(r)
    console.print(f"routing file: {path} (schema: edgebench/decide/routing.schema.json)", highlight=False)


def report_cmd(
    suite: str | None = typer.Option(None, "--suite", "-s", help="Quality suite to report."),
    html: Path | None = typer.Option(None, "--html", help="Output directory (default: data dir/report)."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Markdown + self-contained HTML report with plots, from everything stored."""
    cfg, store = state.config, state.store
    _check_suite(cfg, store, suite)
    out_dir("--html", html)
    host = probe_host()
    _, _, _, routing_json, md, page = decide_all(cfg, store, host, suite, locate_quietly(cfg), html)
    if json_:
        emit_json({"markdown": str(md), "html": str(page), "routing": str(routing_json)})
        return
    console.print(f"report: {page}\nmarkdown: {md}\nrouting: {routing_json}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("rank")(rank_cmd)
    app.command("route")(route_cmd)
    app.command("report")(report_cmd)
