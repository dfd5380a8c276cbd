"""Stable-context probe: the largest context that really works, not the largest that loads.

A context counts as stable when llama-server (a) loads with it, (b) accepts a prompt that fills
it to ~90 %, (c) decodes N tokens after that prompt, (d) does not grow swap beyond a threshold and
(e) keeps its resident memory under the RAM budget. Candidates are 2k, 4k, 8k … ctx_train;
the search starts at the largest the memory planner says fits, then bisects (stability is
monotone in context), and every tried context is stored with its timings, llama.cpp's own
memory breakdown and the failing step.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict

from edgebench.errors import ConfigError
from edgebench.host.probe import HostInfo
from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import plan_memory
from edgebench.runtime import proc
from edgebench.runtime.flags import KV_TYPES, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.memlog import MemoryBreakdown, read_memory_log
from edgebench.runtime.server import ServerFailed, ServerProcess, fixed_completion
from edgebench.store import Provenance, Store, result_key
from edgebench.textsafe import one_line

__all__ = ["STAGE", "ContextProbe", "ContextTrial", "candidates", "probe_context"]

STAGE = "context"
VERSION = 2  # 2: transient failures (our timeout, the environment) are marked and not reused
Step = Literal["load", "fill", "decode", "swap", "ram"]


class ContextTrial(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    ctx: int
    kv: str
    flash_attn: str
    ok: bool
    failed_step: Step | None
    cause: str
    load_ms: float | None  # until /health answered 200
    e2e_ms: float | None  # the fill + decode request, end to end
    prompt_tokens: int
    decoded: int
    prompt_per_second: float | None
    predicted_per_second: float | None
    memory: MemoryBreakdown | None  # llama.cpp's own buffer lines (measured)
    predicted_host_mib: float | None  # the planner's figure for the same config (predicted)
    peak_rss_mib: float
    rss_anon_mib: float | None  # at the end of the decode
    rss_file_mib: float | None  # mmap-ed weights: file-backed, reclaimable
    swap_growth_mib: float  # the whole system's swap: other processes pushed out count too
    peak_anon_mib: float | None = None  # KV, compute, repacked weights: only swap can take it back
    swap_own_mib: float | None = None  # the server's own pages in swap, at most
    budget_mib: float
    # Our timeout or the environment (a port taken, a foreign server), not the config: shown,
    # never reused as the context's verdict (the next run retries).
    transient: bool = False
    build_id: str
    host_fingerprint: str
    measured_at: str
    resumed: bool = False


class ContextProbe(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    kv: str
    stable_ctx: int | None  # a lower bound when `incomplete`
    sha256: str = ""
    file_size: int = 0
    bpw: float = 0.0
    trials: list[ContextTrial]
    incomplete: str | None = None  # why the search stopped early (a transient failure)


def _planned_start(model: ModelInfo, base: RuntimeConfig, cands: list[int], budget_mib: float) -> int:
    """Index of the largest candidate whose planned host memory fits the budget (a prediction:
    only where the search starts, never a verdict); the smallest when none does, the middle
    when the planner cannot say."""
    start = 0
    for i, c in enumerate(cands):
        try:
            fits = plan_memory(model, base.model_copy(update={"ctx": c})).host_total_mib <= budget_mib
        except ConfigError:
            return (len(cands) - 1) // 2
        if not fits:
            break
        start = i
    return start


def candidates(ctx_train: int, lo: int = 2048) -> list[int]:
    out, c = [], lo
    while c < ctx_train:
        out.append(c)
        c *= 2
    return [*out, ctx_train] if ctx_train >= lo else [ctx_train]


def _swap_used_mib() -> float:
    info: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return (info.get("SwapTotal", 0) - info.get("SwapFree", 0)) / 1024


class _Prober:
    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        host: HostInfo,
        model: ModelInfo,
        base: RuntimeConfig,
        *,
        budget_mib: float,
        swap_limit_mib: float,
        n_decode: int,
        log_dir: Path,
    ) -> None:
        self.store, self.runtime, self.host, self.model, self.base = store, runtime, host, model, base
        self.budget_mib, self.swap_limit_mib, self.n_decode, self.log_dir = (
            budget_mib,
            swap_limit_mib,
            n_decode,
            log_dir,
        )
        self.prov = Provenance(
            build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256
        )

    def params(self, cfg: RuntimeConfig) -> dict[str, object]:
        return {
            "runtime": cfg.model_dump(mode="json"),
            "n_decode": self.n_decode,
            "fill": 0.9,
            "budget_mib": round(self.budget_mib),
            "swap_limit_mib": self.swap_limit_mib,
        }

    def trial(self, ctx: int) -> ContextTrial:
        cfg = self.base.model_copy(update={"ctx": ctx, "parallel": 1})
        key, _ = result_key(STAGE, self.prov, self.params(cfg))
        row = self.store.get(key)
        if row is not None and row.version == VERSION and not row.record.get("transient"):
            return ContextTrial.model_validate({**row.record, "resumed": True})
        t = self._run(cfg)
        self.store.put(
            STAGE,
            self.prov,
            self.params(cfg),
            t,
            status="ok" if t.ok else f"fail:{t.failed_step}",
            version=VERSION,
        )
        return t

    def _run(self, cfg: RuntimeConfig) -> ContextTrial:
        try:
            predicted: float | None = plan_memory(self.model, cfg).host_total_mib
        except ConfigError:
            predicted = None
        # By file (sha256), not by name alone: two models may share a name (issue 10).
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model.name)[:48]
        log = self.log_dir / f"context-{self.model.sha256[:12]}-{name}-{cfg.key()}.log"
        srv = ServerProcess(
            self.runtime, self.model.path, cfg, log, verbose=True, rss_limit_mib=self.budget_mib
        )
        n_prompt = max(1, int(cfg.ctx * 0.9) - self.n_decode)
        swap0 = _swap_used_mib()
        step: Step | None = None
        cause, load_ms, e2e_ms, decoded, pps, tps = "ok", None, None, 0, None, None
        anon = file_ = None
        transient = False
        try:
            srv.start()
            load_ms = (srv.startup_s or 0) * 1000
            body = fixed_completion(n_prompt, self.n_decode, self.model.n_vocab, seed=cfg.ctx)
            t0 = time.monotonic()
            try:
                r = srv.client.post("/completion", json=body, timeout=httpx.Timeout(3600, connect=5))
                e2e_ms = (time.monotonic() - t0) * 1000
                if r.status_code != 200:
                    step, cause = "fill", one_line(f"HTTP {r.status_code}: {r.text}", 160)
                else:
                    timings = r.json().get("timings", {})
                    decoded = int(timings.get("predicted_n", 0))
                    pps, tps = timings.get("prompt_per_second"), timings.get("predicted_per_second")
                    if decoded < self.n_decode:
                        step, cause = "decode", f"decoded {decoded} of {self.n_decode} tokens"
            except httpx.TimeoutException:
                step, transient = "fill", True
                cause = "no answer within edgebench's request timeout"
            except httpx.HTTPError as exc:
                step = "ram" if srv.rss_limit_hit else "fill"
                cause = (
                    "resident memory passed the budget"
                    if step == "ram"
                    else f"the server failed during the request: {type(exc).__name__}"
                )
            if srv.alive():
                st = proc.memory_status(srv.pid)
                anon, file_ = st.get("RssAnon"), st.get("RssFile")
        except ServerFailed as exc:
            step = "ram" if exc.cause.value == "rss-limit" else "load"
            cause = exc.detail
            transient = exc.cause in proc.TRANSIENT
        finally:
            srv.stop()
        swap = max(0.0, _swap_used_mib() - swap0)
        if step is None and swap > self.swap_limit_mib:
            step, cause = "swap", f"swap grew {swap:.0f} MiB (limit {self.swap_limit_mib:.0f})"
        if step is None and srv.peak_swap_mib > self.swap_limit_mib:
            step = "swap"
            cause = f"the server had {srv.peak_swap_mib:.0f} MiB in swap (limit {self.swap_limit_mib:.0f})"
        if step is None and srv.peak_rss_mib > self.budget_mib:
            step, cause = "ram", f"peak RSS {srv.peak_rss_mib:.0f} MiB over the budget {self.budget_mib:.0f}"
        memory = read_memory_log(log) if log.exists() else None
        return ContextTrial(
            model=self.model.name,
            ctx=cfg.ctx,
            kv=cfg.cache_type_k,
            flash_attn=cfg.flash_attn,
            ok=step is None,
            failed_step=step,
            cause=f"{cause} (not the config's doing: retried on the next run)" if transient else cause,
            load_ms=load_ms,
            e2e_ms=e2e_ms,
            prompt_tokens=n_prompt,
            decoded=decoded,
            prompt_per_second=pps,
            predicted_per_second=tps,
            memory=memory,
            predicted_host_mib=predicted,
            peak_rss_mib=round(srv.peak_rss_mib, 1),
            rss_anon_mib=anon,
            rss_file_mib=file_,
            swap_growth_mib=round(swap, 1),
            peak_anon_mib=round(srv.peak_anon_mib, 1),
            swap_own_mib=round(srv.peak_swap_mib, 1),
            budget_mib=self.budget_mib,
            transient=transient,
            build_id=self.runtime.build_id,
            host_fingerprint=self.host.fingerprint,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )


def probe_context(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    model: ModelInfo,
    base: RuntimeConfig,
    *,
    budget_mib: float,
    swap_limit_mib: float = 64,
    n_decode: int = 16,
    log_dir: Path,
    ctx_list: list[int] | None = None,
) -> ContextProbe:
    """Binary search for the largest stable context; every tried context is stored."""
    if base.cache_type_k not in KV_TYPES or base.cache_type_v not in KV_TYPES:
        raise ConfigError(f"--kv {base.cache_type_k!r}: unknown KV cache type; one of {', '.join(KV_TYPES)}")
    cands = sorted(set(ctx_list or candidates(model.ctx_train)))
    bad = [c for c in cands if c <= 0 or c > model.ctx_train]
    if bad:
        raise ConfigError(
            f"context {bad[0]}: must be between 1 and {model.name}'s ctx_train {model.ctx_train}"
        )
    p = _Prober(
        store,
        runtime,
        host,
        model,
        base,
        budget_mib=budget_mib,
        swap_limit_mib=swap_limit_mib,
        n_decode=n_decode,
        log_dir=log_dir,
    )
    trials: dict[int, ContextTrial] = {}
    lo, hi, best, incomplete = 0, len(cands) - 1, None, None
    # The first trial is the largest context the planner says fits the budget: when it holds (the
    # usual case) the search is one trial above it, or none, instead of log2(candidates) trials.
    mid = _planned_start(model, base, cands, budget_mib)
    while lo <= hi:
        mid = mid if lo <= mid <= hi else (lo + hi) // 2
        if cands[mid] not in trials:
            trials[cands[mid]] = p.trial(cands[mid])
        t = trials[cands[mid]]
        if t.transient:  # says nothing about this context: stop rather than search on a false "no"
            incomplete = f"context {t.ctx}: {t.cause}"
            break
        if t.ok:
            best, lo = cands[mid], mid + 1
        else:
            hi = mid - 1
        mid = -1  # from here on: bisect
    return ContextProbe(
        model=model.name,
        kv=base.cache_type_k,
        stable_ctx=best,
        sha256=model.sha256,
        file_size=model.file_size,
        bpw=model.bpw,
        trials=[trials[c] for c in sorted(trials)],
        incomplete=incomplete,
    )
