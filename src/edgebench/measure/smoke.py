"""A short llama-bench pass per model so `edgebench run` measures something on day one.

It proves the build runs the model on this host and gives a first pp/tg figure with its spread;
the throughput sweep (later) replaces it with a searched, CI-driven measurement.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgebench.host.probe import HostInfo
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.bench import run_bench
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Provenance, Store, result_key

__all__ = ["STAGE", "SmokeResult", "default_threads", "smoke"]

STAGE = "smoke"
TESTS = (BenchTest(n_prompt=128, n_gen=0, reps=3), BenchTest(n_prompt=0, n_gen=32, reps=3))


class SmokeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    test: str
    status: str
    detail: str
    mean_ts: float | None
    sd_ts: float | None
    samples_ts: list[float]
    peak_rss_mib: float
    config: RuntimeConfig
    resumed: bool = False


def default_threads(host: HostInfo) -> int:
    """Big cores only: on big.LITTLE the little cores slow the whole matmul down to their pace."""
    return max(1, len(host.big_cpus) or host.n_cpus)


def smoke(store: Store, runtime: Runtime, host: HostInfo, model: ModelInfo) -> list[SmokeResult]:
    cfg = RuntimeConfig(threads=default_threads(host), ctx=0)
    prov = Provenance(build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256)
    out = []
    for test in TESTS:
        params = {"runtime": cfg.model_dump(mode="json"), "test": test.model_dump(mode="json")}
        key, _ = result_key(STAGE, prov, params)
        row = store.get(key)
        if row is not None:
            out.append(SmokeResult.model_validate({**row.record, "resumed": True}))
            continue
        o = run_bench(runtime, model.path, cfg, test, timeout_s=300)
        r = o.runs[0] if o.runs else None
        res = SmokeResult(
            model=model.name,
            test=test.name,
            status=o.status.value,
            detail=o.detail,
            mean_ts=r.avg_ts if r else None,
            sd_ts=r.stddev_ts if r else None,
            samples_ts=r.samples_ts if r else [],
            peak_rss_mib=o.peak_rss_mib,
            config=cfg,
        )
        store.put(STAGE, prov, params, res, status=res.status)
        out.append(res)
    return out
