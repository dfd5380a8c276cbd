"""What the gateway serves: models (from the routing file's serving specs, else the store) and tiers.

A tier is a name a client may put in `model` instead of a model: every use case of the routing
file (fast_chat, reasoning, code, tool_calling, factual, deep_analysis, background) and four short
aliases (interactive, quality, batch, route). Each resolves to the use case's primary and backup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgebench.config import BackendConfig, Config
from edgebench.decide.routing import Route, Routing
from edgebench.errors import ConfigError, validation_message
from edgebench.host.probe import HostInfo
from edgebench.measure.serving import ServingSpec, serving_spec
from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import plan_memory
from edgebench.models.registry import list_models
from edgebench.store import Store

__all__ = [
    "ALIASES",
    "Memory",
    "ServeTable",
    "Served",
    "Tier",
    "load_routing",
    "memory_estimate",
    "table_from_routing",
    "table_from_store",
]

# short tier names → the routing file's use case they serve
ALIASES: dict[str, str] = {
    "interactive": "fast_chat",
    "quality": "reasoning",
    "batch": "deep_analysis",
    "route": "background",
}
HOW_TO_ROUTE = (
    "no routing file: serving the store's models by name; `edgebench run` (or `edgebench route` after "
    "measuring) writes <data dir>/report/routing.json, which adds tiers and `auto`"
)


class Memory(BaseModel):
    """What a model is charged against the memory budget, and where the figure came from."""

    model_config = ConfigDict(frozen=True)

    mib: float
    source: Literal["measured", "predicted", "declared", "measured at load", "unknown"]


class Served(BaseModel):
    """One model the gateway can route to: a llama-server it starts, or a remote backend."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec: ServingSpec | None = None  # a managed llama-server
    remote: BackendConfig | None = None  # an OpenAI-compatible server edgebench does not start
    memory: Memory
    max_ctx: int | None = None

    @property
    def kind(self) -> str:
        return (
            "llama-server" if self.spec is not None else f"remote:{self.remote.kind if self.remote else '?'}"
        )


class Tier(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # the use case (fast_chat, …)
    primary: str | None
    backup: str | None
    why: str
    closest: str | None = None  # nothing qualifies: the nearest candidate, used labelled


class ServeTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    models: dict[str, Served]
    tiers: dict[str, Tier]
    latency_s: float = 30.0  # the interactive budget `auto` predicts against
    source: str  # the routing file, or the note on how to make one

    def tier(self, name: str) -> Tier | None:
        return self.tiers.get(ALIASES.get(name, name))


def memory_estimate(spec: ServingSpec, info: ModelInfo | None, host: HostInfo | None) -> Memory:
    """The measured peak RSS of the spec's config when the context probe ran it, else the planner's
    prediction for that config (slots included: KV counts once per slot), labelled as such."""
    if spec.peak_rss_mib:
        return Memory(mib=spec.peak_rss_mib, source="measured")
    if info is not None:
        try:
            plan = plan_memory(
                info,
                spec.runtime,
                host_arch=host.arch if host else "x86_64",
                cpu_flags=host.cpu_flags if host and host.cpu_flags else None,
            )
            return Memory(mib=plan.host_total_mib, source="predicted")
        except Exception:  # an unplannable model is served with its file size as the charge
            pass
    try:
        return Memory(mib=Path(spec.model_path).stat().st_size / 2**20, source="predicted")
    except OSError:
        return Memory(mib=0.0, source="unknown")


def _remote(cfg: Config) -> dict[str, Served]:
    return {
        b.name: Served(
            name=b.name,
            remote=b,
            memory=Memory(mib=b.memory_mib or 0.0, source="declared" if b.memory_mib else "unknown"),
            max_ctx=b.max_ctx,
        )
        for b in cfg.backends
    }


def _served(spec: ServingSpec, info: ModelInfo | None, host: HostInfo | None) -> Served:
    return Served(
        name=spec.model, spec=spec, memory=memory_estimate(spec, info, host), max_ctx=spec.runtime.ctx or None
    )


def load_routing(path: Path) -> Routing:
    try:
        return Routing.model_validate(json.loads(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"routing file {path}: cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"routing file {path}: not JSON: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"routing file {path}: {validation_message(exc)}") from exc


def _tier(r: Route) -> Tier:
    return Tier(
        name=r.use_case,
        primary=r.primary.model if r.primary else None,
        backup=r.backup.model if r.backup else None,
        why=r.why,
        closest=r.closest.model if r.closest else None,
    )


def table_from_routing(
    routing: Routing, source: Path, cfg: Config, store: Store | None, host: HostInfo | None
) -> ServeTable:
    infos = {m.sha256: m for m in list_models(store)} if store is not None else {}
    models = {n: _served(s, infos.get(s.model_sha256), host) for n, s in routing.serving.items()}
    models.update(_remote(cfg))
    if not models:
        raise ConfigError(f"routing file {source}: serves no model (no serving specs, no [[backends]])")
    return ServeTable(
        models=models,
        tiers={r.use_case: _tier(r) for r in routing.routes},
        latency_s=routing.budgets.latency_s,
        source=str(source),
    )


def table_from_store(cfg: Config, store: Store, host: HostInfo) -> ServeTable:
    """No routing file yet: every registered model by name, started from its serving spec as far
    as it is measured (defaults otherwise, said in the spec's sources)."""
    models = {m.name: _served(serving_spec(store, m, host), m, host) for m in list_models(store)}
    models.update(_remote(cfg))
    if not models:
        raise ConfigError(
            "serve: no models to serve: add some (`edgebench models add FILE.gguf`) or run `edgebench run`"
        )
    return ServeTable(models=models, tiers={}, latency_s=cfg.budgets.latency_s, source=HOW_TO_ROUTE)
