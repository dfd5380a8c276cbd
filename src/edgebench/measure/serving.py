"""One serving spec per model: the llama-server config every later stage starts the model with.

Quality and the context probe measure with it, the routing file carries it and the gateway starts
servers from it, so the latency that feeds the ranking is measured on the config that is
recommended. It is assembled from what the sweep and the context probe stored on this host:

- decode's winner (threads, CPU set, KV type, flash attention): decode dominates interactive use;
  the winner is the finalists' race's when one was run (measure/race.py), else the search's best;
- prefill's winner's thread count as `threads_batch` (-tb) and its ubatch (decode never sweeps
  ubatch: one-token steps cannot use it);
- the largest context the context probe proved stable for that KV type and flash-attention mode,
  else a default context that says it is one.

A model measured split over RPC workers is another candidate with its own spec (`split_name`):
its rows, races and context trials are the split ones for that worker set only, never the host's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgebench.host.probe import HostInfo
from edgebench.measure.context import STAGE as CONTEXT_STAGE
from edgebench.measure.context import ContextTrial
from edgebench.measure.race import DECISION_STAGE, DECISION_VERSION, RaceOutcome
from edgebench.measure.search import Best, best_of, decided
from edgebench.measure.throughput import STAGE as THROUGHPUT_STAGE
from edgebench.measure.throughput import ThroughputResult
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.flags import RuntimeConfig
from edgebench.store import Store

__all__ = [
    "DEFAULT_CTX",
    "ServingSpec",
    "context_trials",
    "decided_best",
    "host_default_config",
    "serving_runtime",
    "serving_spec",
    "split_name",
    "split_sets",
    "stored_results",
]

DEFAULT_CTX = 4096  # before the context probe ran (capped at the model's ctx_train)
CtxSource = Literal["context probe", "default"]


class ServingSpec(BaseModel):
    """How to serve one model on this host: enough to start llama-server from the routing file."""

    model_config = ConfigDict(frozen=True)

    model: str
    model_path: str
    model_sha256: str
    chat_template: bool
    backend: str = "llama-server"
    runtime: RuntimeConfig  # full: -t/-tb, CPU set, KV K/V, flash attention, -b/-ub, -c
    ctx_source: CtxSource  # "context probe": -c is the largest context proven stable (measured)
    sources: list[str]  # where each part came from, for the reader of the routing file
    pp_ts: float | None = None  # measured prefill / decode t/s of this config (sweep)
    tg_ts: float | None = None
    load_s: float | None = None  # measured load time at this context (context probe)
    peak_rss_mib: float | None = None  # measured at this context, after filling it to 90 %
    build_id: str | None = None
    host_fingerprint: str


def host_default_config(host: HostInfo) -> RuntimeConfig:
    """Before any sweep: every big core (on big.LITTLE the little ones drag the matmuls down)."""
    return RuntimeConfig(threads=max(1, len(host.big_cpus) or host.n_cpus))


def stored_results(
    store: Store, model_sha256: str | None = None, host_fingerprint: str | None = None, *, split: bool = False
) -> list[ThroughputResult]:
    """Stored throughput rows, one per (model, config, test): a config measured again (another
    llama.cpp build, or the CI method changed) is represented by its newest row only. Rows of the
    model split over RPC workers are another candidate, not this host's own speed: only with
    `split=True` (and then only those)."""
    newest: dict[tuple[str, object, str, int], ThroughputResult] = {}
    for row in store.rows(THROUGHPUT_STAGE, model_sha256):  # oldest first
        if host_fingerprint is not None and row.provenance.host_fingerprint != host_fingerprint:
            continue
        r = ThroughputResult.model_validate(row.record)
        if bool(r.config.rpc) != split:
            continue
        newest[(r.model_sha256, r.point, r.test, r.depth)] = r
    return list(newest.values())


def decided_best(
    store: Store, results: list[ThroughputResult], kind: str, model_sha256: str, host_fingerprint: str | None
) -> Best | None:
    """The newest stored race's winner for `kind` at depth 0 on this host (None: any host); else
    the best mean of `results`."""
    race = None
    points = {r.point for r in results}  # a race among other candidates' configs (split) is not ours
    for row in store.rows(DECISION_STAGE, model_sha256):  # oldest first: the last one is the newest
        here = host_fingerprint is None or row.provenance.host_fingerprint == host_fingerprint
        if here and row.version == DECISION_VERSION:
            o = RaceOutcome.model_validate(row.record)
            if o.kind == kind and o.depth == 0 and o.winner in points:
                race = o
    b = decided(results, race) if race is not None else None
    return b or best_of(results, kind, 0)


def split_name(model: str, rpc: Sequence[str]) -> str:
    """The candidate name of `model` with its offloaded layers on the workers `rpc` (in order)."""
    return f"{model}@{'+'.join(rpc)}"


def split_sets(
    store: Store, model_sha256: str, host_fingerprint: str | None
) -> dict[tuple[str, ...], list[ThroughputResult]]:
    """This host's split measurements of a model, by worker set: each set is its own candidate."""
    out: dict[tuple[str, ...], list[ThroughputResult]] = defaultdict(list)
    for r in stored_results(store, model_sha256, host_fingerprint, split=True):
        if not r.transient:
            out[r.config.rpc].append(r)
    return dict(out)


def context_trials(
    store: Store, model_sha256: str, host_fingerprint: str | None, rpc: tuple[str, ...] = ()
) -> list[ContextTrial]:
    """Context trials of this model on this host with exactly the worker set `rpc` (() = alone)."""
    out = []
    for r in store.rows(CONTEXT_STAGE, model_sha256):
        if host_fingerprint is not None and r.provenance.host_fingerprint != host_fingerprint:
            continue
        if tuple((r.params.get("runtime") or {}).get("rpc") or ()) == rpc:
            out.append(ContextTrial.model_validate(r.record))
    return out


def serving_runtime(
    best_tg: ThroughputResult | None, best_pp: ThroughputResult | None, default: RuntimeConfig
) -> RuntimeConfig:
    """Decode's winner, with prefill's winner's threads as threads_batch and its ubatch."""
    if best_tg is None:
        return default
    cfg = best_tg.config
    if best_pp is None:
        return cfg
    pp = best_pp.config
    tb = pp.threads if cfg.cpus is None else min(pp.threads, len(cfg.cpus))  # inside decode's CPU set
    return cfg.model_copy(
        update={
            "threads_batch": tb,  # explicit even when equal to -t: the spec says what was measured
            "ubatch": pp.ubatch,
            "batch": max(cfg.batch, pp.ubatch),
        }
    )


def _proven(trials: list[ContextTrial], cfg: RuntimeConfig) -> ContextTrial | None:
    """The largest stable context probed at this config's KV type and flash-attention mode."""
    ok = [
        t
        for t in trials
        if t.ok and not t.transient and t.kv == cfg.cache_type_k and t.flash_attn == cfg.flash_attn
    ]
    return max(ok, key=lambda t: t.ctx) if ok else None


def serving_spec(store: Store, model: ModelInfo, host: HostInfo, rpc: tuple[str, ...] = ()) -> ServingSpec:
    """The spec from this host's stored rows (sweep, context probe); defaults say they are. With
    `rpc`: the model split over those workers, from its split rows (named by `split_name`)."""
    if rpc:
        results = split_sets(store, model.sha256, host.fingerprint).get(rpc, [])
    else:
        results = [r for r in stored_results(store, model.sha256, host.fingerprint) if not r.transient]
    bt = decided_best(store, results, "tg", model.sha256, host.fingerprint)
    bp = decided_best(store, results, "pp", model.sha256, host.fingerprint)
    default = host_default_config(host)
    if rpc:  # not measured yet: every layer on the workers, llama.cpp splitting by free memory
        default = default.model_copy(update={"rpc": rpc, "ngl": -1})
    cfg = serving_runtime(bt.result if bt else None, bp.result if bp else None, default)
    sources = []
    if rpc:
        sources.append(f"layers on RPC workers {', '.join(rpc)} (split measurements only)")
    if bt is None:
        sources.append(f"threads: host default ({cfg.threads}: every big core); not swept yet")
    else:
        sources.append(f"decode winner of the sweep: {bt.result.config.label()}")
        if bp is not None:
            sources.append(f"threads_batch and ubatch: prefill winner {bp.result.config.label()}")
    proven = _proven(context_trials(store, model.sha256, host.fingerprint, rpc), cfg)
    source: CtxSource
    if proven is not None:
        cfg, source = cfg.model_copy(update={"ctx": proven.ctx}), "context probe"
        sources.append(f"context {proven.ctx}: largest proven stable at kv {cfg.cache_type_k}")
    else:
        cfg, source = cfg.model_copy(update={"ctx": min(DEFAULT_CTX, model.ctx_train)}), "default"
        sources.append(f"context {cfg.ctx}: default, not probed at kv {cfg.cache_type_k} fa {cfg.flash_attn}")
    return ServingSpec(
        model=split_name(model.name, rpc) if rpc else model.name,
        model_path=model.path,
        model_sha256=model.sha256,
        chat_template=model.chat_template,
        runtime=cfg.model_copy(update={"jinja": model.chat_template, "parallel": 1}),
        ctx_source=source,
        sources=sources,
        pp_ts=bp.result.mean_ts if bp else None,
        tg_ts=bt.result.mean_ts if bt else None,
        load_s=(proven.load_ms or 0) / 1000 if proven and proven.load_ms is not None else None,
        peak_rss_mib=proven.peak_rss_mib if proven else None,  # the head's own, when split
        build_id=bt.result.build_id if bt else None,
        host_fingerprint=host.fingerprint,
    )
