"""The decide stage: gather (this host's rows) → rank → route (with serving specs) → files → report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgebench import __version__
from edgebench.config import Config
from edgebench.decide.evidence import ModelEvidence
from edgebench.decide.export import write_routing
from edgebench.decide.gather import gather
from edgebench.decide.rank import Ranking, rank
from edgebench.decide.route import route
from edgebench.decide.routing import Routing
from edgebench.host.probe import HostInfo
from edgebench.measure.serving import ServingSpec, serving_spec, split_sets
from edgebench.models.registry import list_models
from edgebench.runtime.locate import Runtime
from edgebench.store import Store

__all__ = ["Decision", "decide", "rank_only", "serving_specs"]


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    host_fingerprint: str
    evidence: list[ModelEvidence]
    ranking: Ranking
    routing: Routing
    routing_json: Path
    routing_toml: Path
    markdown: Path | None
    html: Path | None


def serving_specs(store: Store, host: HostInfo) -> dict[str, ServingSpec]:
    """Every registered model's serving spec on `host` (measure.serving), and one per worker set
    it was measured split over (named by split_name: the gateway starts it with those workers)."""
    out = {}
    for m in list_models(store):
        out[m.name] = serving_spec(store, m, host)
        for rpc in split_sets(store, m.sha256, host.fingerprint):
            s = serving_spec(store, m, host, rpc)
            out[s.model] = s
    return out


def rank_only(cfg: Config, store: Store, suite: str | None, host_fingerprint: str) -> Ranking:
    return rank(gather(cfg, store, suite, host=host_fingerprint), cfg.budgets)


def decide(
    cfg: Config,
    store: Store,
    host: HostInfo,
    suite: str | None,
    *,
    runtime: Runtime | None = None,
    out_dir: Path | None = None,
    report: bool = True,
    host_fingerprint: str | None = None,
) -> Decision:
    """Decide from the rows of `host_fingerprint` (default: this host) and write the routing
    files (+ the report unless `report` is False) into `out_dir` (default: data dir/report)."""
    fp = host_fingerprint or host.fingerprint
    ev = gather(cfg, store, suite, host=fp)
    ranking = rank(ev, cfg.budgets)
    specs = serving_specs(store, host) if fp == host.fingerprint else {}
    ram = host.ram_total_mib if fp == host.fingerprint else None
    routing = route(ev, cfg.budgets, ram_total_mib=ram, ranking=ranking, serving=specs)
    out = out_dir or cfg.data_dir / "report"
    js, toml = write_routing(routing, out)
    md = html = None
    if report:
        from edgebench.report import render_report  # lazy: matplotlib only when a report is drawn

        prov: dict[str, Any] = {
            "host_fingerprint": fp,
            "host": f"{host.cpu_model}, {host.ram_total_mib} MiB" if fp == host.fingerprint else fp,
            "edgebench_version": __version__,
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if runtime is not None:
            prov["llama_cpp_build"] = runtime.build_id
            prov["llama_cpp_preset"] = runtime.preset or "(not built by edgebench)"
        md, html = render_report(ev, ranking, routing, prov, out)
    return Decision(
        host_fingerprint=fp,
        evidence=ev,
        ranking=ranking,
        routing=routing,
        routing_json=js,
        routing_toml=toml,
        markdown=md,
        html=html,
    )
