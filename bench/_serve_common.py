"""The gateway for the benchmarks (uvicorn on an ephemeral loopback port): in a thread of this process
when the bench reads its state, or as its own process (as `edgebench serve` runs) when the bench times
it, with the CPU time it used (what it takes from inference on a small board)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket's proto says TCP, and a bare socket.socket() says 0. Without it Nagle holds the first SSE
    # chunk until the client ACKs the response head (its delayed ACK: +40 ms TTFT). `edgebench serve`
    # lets uvicorn bind (getaddrinfo gives IPPROTO_TCP), so it is not affected.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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


@dataclass
class RunningProcess:
    url: str
    proc: psutil.Process

    def cpu_s(self) -> float:
        """User + system CPU seconds of the gateway process so far."""
        t = self.proc.cpu_times()
        return float(t.user + t.system)


@contextmanager
def run_gateway_process(spec: ServingSpec | str, log_dir: Path) -> Iterator[RunningProcess]:
    """The gateway as its own process: a client in this process shares no GIL with it. `spec`: the
    model it serves, or the URL of an upstream it relays to as a remote backend named "fake"."""
    if isinstance(spec, str):
        what = ["--remote", spec]
    else:
        (log_dir / "spec.json").write_text(spec.model_dump_json())
        what = [str(log_dir / "spec.json")]
    here = Path(__file__).parent
    proc = subprocess.Popen(
        [sys.executable, str(here / "_gateway_proc.py"), *what, str(log_dir)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its llama-server children go with it
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield RunningProcess(f"http://127.0.0.1:{port}", psutil.Process(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn's graceful stop: the pool stops its servers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
