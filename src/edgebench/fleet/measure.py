"""llama-bench with the model split over RPC workers, local beside it, stored with every
participating host and the link: what a LAN costs, measured."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from edgebench.host.probe import HostInfo
from edgebench.hostaddr import parse_endpoint
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.bench import run_bench
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Provenance, Store

__all__ = ["STAGE", "VERSION", "RpcBenchRow", "bench_split"]

STAGE = "rpc_bench"
VERSION = 1


class RpcBenchRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    mode: str  # "local" or "split"
    link: str  # how the head reaches the workers ("loopback", "1gbit 0.1 ms", …)
    test: str
    workers: list[str]  # endpoint and host fingerprint of each rpc-server
    tensor_split: list[float] | None
    ok: bool
    avg_ts: float | None = None
    stddev_ts: float | None = None
    samples_ts: list[float] = []
    cause: str = ""  # why it failed (a worker gone: llama-bench's own last words)
    wall_s: float = 0.0


def _reachable(endpoint: str, timeout_s: float = 2.0) -> bool:
    host, port = parse_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def bench_split(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    model: ModelInfo,
    cfg: RuntimeConfig,
    test: BenchTest,
    *,
    link: str,
    workers: Sequence[str] = (),
    timeout_s: float = 600,
) -> RpcBenchRow:
    """One llama-bench process (split when cfg.rpc names workers), stored as an rpc_bench row."""
    out = run_bench(runtime, model.path, cfg, test, timeout_s=timeout_s)
    run = out.runs[0] if out.runs else None
    cause = "" if run else f"{out.status.value}: {out.detail}"
    if run is None and cfg.rpc:
        gone = [ep for ep in cfg.rpc if not _reachable(ep)]
        if gone:  # llama-bench only says SIGPIPE or "Remote RPC server crashed": name the worker
            cause = f"RPC worker {', '.join(gone)} unreachable after the run; llama-bench {cause}"
    row = RpcBenchRow(
        model=model.name,
        mode="split" if cfg.rpc else "local",
        link=link if cfg.rpc else "none",
        test=test.name,
        workers=list(workers),
        tensor_split=list(cfg.tensor_split) if cfg.tensor_split else None,
        ok=run is not None,
        avg_ts=run.avg_ts if run else None,
        stddev_ts=run.stddev_ts if run else None,
        samples_ts=list(run.samples_ts) if run else [],
        cause=cause,
        wall_s=out.wall_s,
    )
    prov = Provenance(build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256)
    params = {"runtime": cfg.model_dump(mode="json"), "test": test.model_dump(mode="json"), "link": row.link,
              "workers": row.workers}  # fmt: skip
    store.put(STAGE, prov, params, row, status="ok" if row.ok else "failed", version=VERSION)
    return row
