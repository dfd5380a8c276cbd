"""The gateway in a thread of this process (uvicorn on an ephemeral loopback port) for the benchmarks,
with the CPU time its event-loop thread used (what it takes from inference on a small board)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import uvicorn

from edgebench.measure.serving import ServingSpec
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.serve.app import Gateway, GatewaySettings, build_app
from edgebench.serve.table import Memory, Served, ServeTable


@dataclass
class Running:
    url: str
    gateway: Gateway
    thread: threading.Thread

    def cpu_s(self) -> float:
        """User + system CPU seconds of the gateway's event-loop thread so far."""
        for t in psutil.Process().threads():
            if t.id == self.thread.native_id:
                return float(t.user_time + t.system_time)
        return 0.0


def spec_for(model: ModelInfo, cfg: RuntimeConfig, **measured: float) -> ServingSpec:
    return ServingSpec(
        model=model.name,
        model_path=model.path,
        model_sha256=model.sha256,
        chat_template=model.chat_template,
        runtime=cfg.model_copy(update={"jinja": model.chat_template}),
        ctx_source="default",
        sources=["bench"],
        host_fingerprint="bench",
        **measured,  # type: ignore[arg-type]
    )


@contextmanager
def run_gateway(spec: ServingSpec, runtime: Runtime, log_dir: Path, **settings: object) -> Iterator[Running]:
    tbl = ServeTable(
        models={spec.model: Served(name=spec.model, spec=spec, memory=Memory(mib=0, source="unknown"))},
        tiers={},
        source="bench",
    )
    app, gw = build_app(tbl, runtime, GatewaySettings(log_dir=log_dir, **settings))  # type: ignore[arg-type]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{sock.getsockname()[1]}", gw, t)
    finally:
        server.should_exit = True
        t.join(timeout=60)
        sock.close()
