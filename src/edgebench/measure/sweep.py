"""The sweep stage for one model: search the space, then cross-check the winner via llama-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgebench.host.probe import HostInfo
from edgebench.measure.crosscheck import STAGE as CHECK_STAGE
from edgebench.measure.crosscheck import VERSION as CHECK_VERSION
from edgebench.measure.crosscheck import ServerCheck, server_crosscheck
from edgebench.measure.race import RaceSettings
from edgebench.measure.search import Search, SweepOutcome, run_search
from edgebench.measure.space import SweepSpace
from edgebench.measure.throughput import MeasureSettings, PointMeasurer, ThroughputResult
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.locate import Runtime
from edgebench.runtime.proc import TRANSIENT
from edgebench.store import Provenance, Store, result_key

__all__ = [
    "crosscheck_best",
    "export_jsonl",
    "sweep_model",
]


def sweep_model(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    model: ModelInfo,
    space: SweepSpace,
    settings: MeasureSettings,
    search: Search,
    *,
    race: RaceSettings | None = None,
    on_result: Any = None,
    on_round: Any = None,
    sysroot: Path = Path("/"),
) -> SweepOutcome:
    measurer = PointMeasurer(store, runtime, host, model, settings, on_result=on_result, sysroot=sysroot)
    return run_search(space, measurer, search, race, on_round=on_round)


def crosscheck_best(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    model: ModelInfo,
    outcome: SweepOutcome,
    *,
    n_prompt: int,
    n_gen: int,
    log_dir: Path,
    reps: int = 3,
) -> ServerCheck | None:
    if outcome.best_tg is None:
        return None
    cfg = outcome.best_tg.result.config
    prov = Provenance(build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256)
    params = {"runtime": cfg.model_dump(mode="json"), "n_prompt": n_prompt, "n_gen": n_gen}
    key, _ = result_key(CHECK_STAGE, prov, params)
    row = store.get(key)
    if row is not None and row.version == CHECK_VERSION and row.status not in TRANSIENT:  # else retry
        return ServerCheck.model_validate(row.record)
    bench_pp = next(
        (r.mean_ts for r in outcome.results if r.kind == "pp" and r.ok and r.depth == 0 and r.config == cfg),
        None,
    )
    if outcome.best_pp is not None and bench_pp is None:
        bench_pp = outcome.best_pp.result.mean_ts
    check = server_crosscheck(
        runtime,
        model,
        cfg,
        n_prompt=n_prompt,
        n_gen=n_gen,
        reps=reps,
        log_dir=log_dir,
        bench_pp=bench_pp,
        bench_tg=outcome.best_tg.result.mean_ts,
    )
    store.put(CHECK_STAGE, prov, params, check, status=check.status, version=CHECK_VERSION)
    return check


def export_jsonl(results: list[ThroughputResult], path: Path) -> int:
    """llama-bench's own `-o jsonl` rows (samples merged), readable by compare-llama-bench.py."""
    n = 0
    with path.open("w") as fh:
        for r in results:
            if r.bench_row is None:
                continue
            fh.write(json.dumps(r.bench_row) + "\n")
            n += 1
    return n
