"""From the config, the routing file (or the store) and the host to a gateway ready to run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from edgebench.config import Config
from edgebench.errors import ConfigError
from edgebench.host.probe import HostInfo
from edgebench.hostaddr import is_loopback
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.serve.app import Gateway, GatewaySettings, build_app
from edgebench.serve.table import (
    ALIASES,
    Served,
    ServeTable,
    load_routing,
    table_from_routing,
    table_from_store,
)
from edgebench.serve.workbench import Results
from edgebench.store import Store

__all__ = [
    "API_KEY_ENV",
    "Plan",
    "api_key",
    "check_bind",
    "load_table",
    "make_app",
    "pinned",
    "plan_gateway",
]

API_KEY_ENV = "EDGEBENCH_API_KEY"
# tiers that do background work go on the little cores of a big.LITTLE host; the rest on the big ones
LITTLE_TIERS = frozenset({"background"})


def api_key(cli_key: str | None, key_file: Path | None) -> str | None:
    """--api-key, else $EDGEBENCH_API_KEY, else [serve] api_key_file (its first line)."""
    if cli_key:
        return cli_key
    if env := os.environ.get(API_KEY_ENV):
        return env
    if key_file is not None:
        try:
            key = key_file.read_text().strip().splitlines()[0].strip() if key_file.read_text().strip() else ""
        except OSError as exc:
            raise ConfigError(f"serve.api_key_file {key_file}: cannot read: {exc.strerror or exc}") from exc
        if not key:
            raise ConfigError(f"serve.api_key_file {key_file}: empty")
        return key
    return None


def check_bind(host: str, key: str | None) -> None:
    if not is_loopback(host) and not key:
        raise ConfigError(
            f"serve --host {host}: not a loopback address and no API key; give --api-key, "
            f"${API_KEY_ENV} or [serve] api_key_file (or bind 127.0.0.1)"
        )
    if key is not None and len(key) < 16:
        raise ConfigError("serve: the API key is shorter than 16 characters")


def load_table(cfg: Config, store: Store, host: HostInfo, routing: Path | None) -> ServeTable:
    """The routing file given, else <data dir>/report/routing.json when it exists, else the store."""
    path = routing or cfg.data_dir / "report" / "routing.json"
    if routing is not None or path.is_file():
        return table_from_routing(load_routing(path), path, cfg, store, host)
    return table_from_store(cfg, store, host)


def pinned(served: Served, tiers: list[str], host: HostInfo, cfg: Config) -> RuntimeConfig | None:
    """The spec's runtime, pinned to the tier's cluster on a big.LITTLE host when the spec does not
    pin it itself (the sweep measured on a CPU set: that one is kept)."""
    if served.spec is None:
        return None
    rc = served.spec.runtime
    if rc.cpus is not None or not host.little_cpus or not host.big_cpus:
        return rc
    wanted = [
        cfg.serve.tiers[t].cpus
        for t in [*tiers, *(a for a, uc in ALIASES.items() if uc in tiers)]
        if t in cfg.serve.tiers and cfg.serve.tiers[t].cpus
    ]
    where = wanted[0] if wanted else ("little" if tiers and set(tiers) <= LITTLE_TIERS else "big")
    if where == "all":
        return rc
    cpus = tuple(host.little_cpus if where == "little" else host.big_cpus)
    tb = min(rc.threads_batch or rc.threads, len(cpus))
    return rc.model_copy(update={"cpus": cpus, "threads": min(rc.threads, len(cpus)), "threads_batch": tb})


@dataclass
class Plan:
    table: ServeTable
    settings: GatewaySettings
    host: str
    port: int


def plan_gateway(
    cfg: Config,
    store: Store,
    host_info: HostInfo,
    *,
    routing: Path | None,
    host: str | None,
    port: int | None,
    cli_key: str | None,
) -> Plan:
    bind = host or cfg.serve.host
    key = api_key(cli_key, cfg.serve.api_key_file)
    check_bind(bind, key)
    table = load_table(cfg, store, host_info, routing)
    ttl = {ALIASES.get(t, t): c.ttl_s for t, c in cfg.serve.tiers.items() if c.ttl_s is not None}
    budget = cfg.serve.budget_mib or cfg.budgets.usable_mib(host_info.ram_total_mib)
    settings = GatewaySettings(
        log_dir=cfg.data_dir / "serve" / "logs",
        api_key=key,
        budget_mib=budget,
        ready_timeout_s=cfg.serve.ready_timeout_s,
        queue_depth=cfg.serve.queue_depth,
        max_body_bytes=cfg.serve.max_body_bytes,
        stall_k=cfg.serve.stall_k,
        stall_floor_s=cfg.serve.stall_floor_s,
        cors_origins=tuple(cfg.serve.cors_origins),
        ttl_s=cfg.serve.ttl_s,
        tier_ttl_s=ttl,
    )
    return Plan(table=table, settings=settings, host=bind, port=port if port is not None else cfg.serve.port)


def make_app(
    plan: Plan, runtime: Runtime | None, host_info: HostInfo, cfg: Config, store: Store | None = None
) -> tuple[Starlette, Gateway]:
    def runtime_for(s: Served) -> RuntimeConfig | None:
        tiers = [t.name for t in plan.table.tiers.values() if s.name in (t.primary, t.backup, t.closest)]
        return pinned(s, tiers, host_info, cfg)

    results = Results(cfg=cfg, store_path=store.path, host=host_info) if store is not None else None
    return build_app(plan.table, runtime, plan.settings, runtime_for=runtime_for, results=results)
