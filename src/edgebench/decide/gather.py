"""Store → `ModelEvidence`: what every earlier stage measured, per model (and remote backend).

Reads only; the latest row wins where a stage was re-run with other settings. Every row read
here already carries its provenance (build id, host fingerprint, model sha256, parameters).
"""

from __future__ import annotations

from collections import defaultdict

from edgebench.config import Config
from edgebench.decide.evidence import ContextEvidence, MemoryEstimate, ModelEvidence
from edgebench.errors import ConfigError
from edgebench.measure.context import ContextTrial
from edgebench.measure.crosscheck import STAGE as CHECK_STAGE
from edgebench.measure.crosscheck import ServerCheck
from edgebench.measure.serving import context_trials, decided_best, split_name, split_sets, stored_results
from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import plan_memory
from edgebench.models.registry import list_models
from edgebench.quality.runner import STAGE as QUALITY_STAGE
from edgebench.quality.runner import QualityResult
from edgebench.quality.score import score
from edgebench.runtime.flags import RuntimeConfig
from edgebench.store import Row, Store

__all__ = ["gather", "is_requantized"]


def is_requantized(m: ModelInfo) -> bool:
    return "-requant-" in m.name  # the name edgebench.models.variants gives its llama-quantize copies


def _context(trials: list[ContextTrial]) -> ContextEvidence | None:
    if not trials:
        return None
    by_kv: dict[str, list[ContextTrial]] = defaultdict(list)
    for t in trials:
        by_kv[t.kv].append(t)
    # The KV type probed at the most contexts is the one the user cared about.
    ts = max(by_kv.values(), key=len)
    ok = [t for t in ts if t.ok]
    best = max(ok, key=lambda t: t.ctx) if ok else None
    dev = best.memory.devices.get("CPU") if best and best.memory else None
    return ContextEvidence(
        stable_ctx=best.ctx if best else None,
        tried={t.ctx: t.ok for t in ts},
        host_total_mib=best.peak_rss_mib if best else None,
        anon_mib=best.peak_anon_mib if best else None,
        model_mib=dev.model_mib if dev else None,
        kv_mib=dev.kv_mib if dev else None,
        compute_mib=dev.compute_mib if dev else None,
        load_s=(best.load_ms or 0) / 1000 if best and best.load_ms is not None else None,
    )


def _predicted(m: ModelInfo, cfg: RuntimeConfig, ctx: int) -> MemoryEstimate | None:
    try:
        p = plan_memory(m, cfg.model_copy(update={"ctx": min(ctx, m.ctx_train)}))
    except ConfigError:
        return None
    return MemoryEstimate(
        ctx=p.n_ctx,
        host_total_mib=p.host_total_mib,
        model_mib=p.model_mib + p.repack_mib,
        kv_mib=p.kv_mib,
        compute_mib=p.compute_mib,
    )


def _split_candidates(
    store: Store, m: ModelInfo, host: str | None, own: ModelEvidence
) -> list[ModelEvidence]:
    """The model split over each measured worker set: its own candidate, with the split's speed,
    context and head memory, and the model's quality (the same weights give the same tokens). Its
    reply latency is predicted (labelled): the model's measured one, scaled by the decode speeds."""
    out = []
    for rpc, results in split_sets(store, m.sha256, host).items():
        bp = decided_best(store, results, "pp", m.sha256, host)  # a split race's winner if one ran
        bt = decided_best(store, results, "tg", m.sha256, host)
        q, note = own.quality, None
        split_tg, own_tg = (bt.result.mean_ts if bt else None), (own.best_tg.mean_ts if own.best_tg else None)
        if q is not None and split_tg and own_tg:
            k = own_tg / split_tg
            lat = {"mean_latency_s": q.mean_latency_s * k, "latency_sd_s": q.latency_sd_s * k}
            q = q.model_copy(update=lat)
            note = f"predicted: {m.name}'s measured reply latency × its decode t/s ÷ the split's ({k:.2f}×)"
        else:  # without both decode speeds nothing says how long it replies: not rankable yet
            q = None
        out.append(
            own.model_copy(
                update={
                    "name": split_name(m.name, rpc),
                    "backend": "rpc",
                    "split_of": m.name,
                    "rpc": rpc,
                    "best_pp": bp.result if bp else None,
                    "best_tg": bt.result if bt else None,
                    "throughput": results,
                    "server_check": None,
                    "context": _context(context_trials(store, m.sha256, host, rpc)),
                    # the planner's figure is the whole model on one host: not this candidate's
                    "predicted_memory": None,
                    "quality": q,
                    "latency_note": note,
                }
            )
        )
    return out


def gather(cfg: Config, store: Store, suite: str | None = None, *, host: str | None) -> list[ModelEvidence]:
    """Evidence measured on host fingerprint `host` only: a store holding rows from several boards
    (pooled results) never mixes them into one decision. `host=None` reads every host (tests)."""

    def here(r: Row) -> bool:
        return host is None or r.provenance.host_fingerprint == host

    quality: dict[str, list[QualityResult]] = defaultdict(list)
    for r in store.rows(QUALITY_STAGE):
        if not here(r):
            continue
        q = QualityResult.model_validate(r.record)
        if suite is None or q.suite == suite:
            quality[q.target].append(q)
    checks: dict[str, ServerCheck] = {}
    for r in filter(here, store.rows(CHECK_STAGE)):
        checks[r.provenance.model_sha256] = ServerCheck.model_validate(r.record)
    out = []
    for m in list_models(store):
        results = stored_results(store, m.sha256, host)
        # the finalists' race's winners when the sweep raced them (the serving spec's choice too)
        bp = decided_best(store, results, "pp", m.sha256, host)
        bt = decided_best(store, results, "tg", m.sha256, host)
        qs = quality.pop(m.name, [])
        if suite is None and qs:  # one suite per model: the one it ran most
            counts: dict[str, int] = defaultdict(int)
            for q in qs:
                counts[q.suite] += 1
            top = max(counts, key=lambda s: counts[s])
            qs = [q for q in qs if q.suite == top]
        ctx = _context(context_trials(store, m.sha256, host))  # alone: split trials are not the host's
        cfg_rt = bt.result.config if bt else RuntimeConfig()
        pred = _predicted(m, cfg_rt, ctx.stable_ctx if ctx and ctx.stable_ctx else 4096)
        out.append(
            ModelEvidence(
                name=m.name,
                sha256=m.sha256,
                backend="cpu",
                file_size=m.file_size,
                params=m.params,
                quant=m.quant,
                requantized=is_requantized(m),
                chat_template=m.chat_template,
                best_pp=bp.result if bp else None,
                best_tg=bt.result if bt else None,
                throughput=results,
                server_check=checks.get(m.sha256),
                context=ctx,
                quality=score(qs) if qs else None,
                predicted_memory=pred,
            )
        )
        out += _split_candidates(store, m, host, out[-1])
    for target, qs in quality.items():  # remote backends: only quality (and its latency) is known
        backend = target.split(":")[0]
        if backend not in {b.name for b in cfg.backends}:
            continue
        out.append(
            ModelEvidence(
                name=target,
                sha256=qs[0].backend_id,
                backend=backend,
                file_size=None,
                params=None,
                quant=None,
                quality=score(qs),
            )
        )
    return out
