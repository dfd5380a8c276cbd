"""`edgebench rank`, `edgebench route`, `edgebench report`: decisions from stored measurements."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgebench.cli._args import out_dir
from edgebench.cli._common import console, emit_json, state
from edgebench.config import Config
from edgebench.decide.rank import Ranking
from edgebench.decide.routing import Routing
from edgebench.errors import ConfigError
from edgebench.fleet.leaderboard import write_fleet_report
from edgebench.host.probe import probe_host
from edgebench.pipeline.decide import decide, rank_only
from edgebench.quality.runner import STAGE as QUALITY_STAGE
from edgebench.quality.suite import BUILTIN_DIR
from edgebench.setup import locate_quietly
from edgebench.store import Store

__all__ = ["register", "render_ranking", "render_routing"]

HOST_OPT = typer.Option(
    None,
    "--host",
    help="Decide from another host's rows (its fingerprint, as stored); default: this host only.",
)


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
    for col in ("use case", "primary", "backup", "closest, if none qualifies", "why"):
        t.add_column(col)
    for ro in r.routes:
        t.add_row(
            ro.use_case,
            ro.primary.model if ro.primary else "—",
            ro.backup.model if ro.backup else "—",
            f"{ro.closest.model}: misses {'; '.join(ro.closest.misses)}" if ro.closest else "—",
            escape(ro.why),
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


def _host(store: Store, fingerprint: str | None) -> str:
    """This host's fingerprint, or a stored one the user named (rows from several boards)."""
    if fingerprint is None:
        return probe_host().fingerprint
    known = sorted({r[0] for r in store.db.execute("SELECT DISTINCT host_fingerprint FROM results")})
    if fingerprint not in known:
        raise ConfigError(
            f"--host {fingerprint!r}: no stored rows from it (hosts: {', '.join(known) or 'none'})"
        )
    return fingerprint


def rank_cmd(
    suite: str | None = typer.Option(None, "--suite", "-s", help="Quality suite to rank on."),
    host: str | None = HOST_OPT,
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Composite quality × speed ranking with CIs, ties and the Pareto front (from stored results)."""
    cfg, store = state.config, state.store
    _check_suite(cfg, store, suite)
    r = rank_only(cfg, store, suite, _host(store, host))
    if json_:
        emit_json(r)
        return
    render_ranking(r)


def route_cmd(
    suite: str | None = typer.Option(None, "--suite", "-s", help="Quality suite to route on."),
    out: Path | None = typer.Option(None, "--out", help="Directory for routing.json/.toml."),
    host: str | None = HOST_OPT,
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Model map and routing table by explicit rules; writes routing.json and routing.toml."""
    cfg, store = state.config, state.store
    _check_suite(cfg, store, suite)
    out_dir("--out", out)
    fp = _host(store, host)
    d = decide(cfg, store, probe_host(), suite, out_dir=out, report=False, host_fingerprint=fp)
    if json_:
        emit_json({"routing": d.routing, "files": [str(d.routing_json), str(d.routing_toml)]})
        return
    render_routing(d.routing)
    console.print(
        f"routing file: {d.routing_json} (schema: edgebench/decide/routing.schema.json)", highlight=False
    )


def report_cmd(
    suite: str | None = typer.Option(None, "--suite", "-s", help="Quality suite to report."),
    html: Path | None = typer.Option(None, "--html", help="Output directory (default: data dir/report)."),
    host: str | None = HOST_OPT,
    hosts: str | None = typer.Option(
        None, "--hosts", help="all: every host in the store side by side (pooled results), fleet.md/.html."
    ),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Markdown + self-contained HTML report with plots, from everything stored."""
    cfg, store = state.config, state.store
    out_dir("--html", html)
    if hosts is not None:
        if hosts != "all" or host is not None:
            raise ConfigError(f"--hosts {hosts!r}: only --hosts all (without --host)")
        _fleet_report(store, html or cfg.data_dir / "report", json_)
        return
    _check_suite(cfg, store, suite)
    fp = _host(store, host)
    d = decide(
        cfg, store, probe_host(), suite, runtime=locate_quietly(cfg), out_dir=html, host_fingerprint=fp
    )
    if json_:
        emit_json({"markdown": str(d.markdown), "html": str(d.html), "routing": str(d.routing_json)})
        return
    console.print(f"report: {d.html}\nmarkdown: {d.markdown}\nrouting: {d.routing_json}", highlight=False)


def _fleet_report(store: Store, out: Path, json_: bool) -> None:
    f, md, page = write_fleet_report(store, out)
    if not f.boards:
        raise ConfigError(
            "report --hosts all: no measured rows in the store (run a sweep, or import bundles)"
        )
    if json_:
        emit_json({"markdown": str(md), "html": str(page), "hosts": [b.fingerprint for b in f.boards]})
        return
    console.print(f"fleet report ({len(f.boards)} hosts): {page}\nmarkdown: {md}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("rank")(rank_cmd)
    app.command("route")(route_cmd)
    app.command("report")(report_cmd)
