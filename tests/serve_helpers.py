"""A gateway on a real socket in a thread (uvicorn), and serving specs for tiny synthetic models."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from edgebench.measure.serving import ServingSpec
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.serve.app import Gateway, GatewaySettings, build_app
from edgebench.serve.table import Memory, Served, ServeTable, Tier

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def spec(
    path: Path,
    name: str,
    *,
    ctx: int = 1024,
    rss: float | None = None,
    pp: float | None = None,
    tg: float | None = None,
    chat: bool = True,
    parallel: int = 1,
) -> ServingSpec:
    return ServingSpec(
        model=name,
        model_path=str(path),
        model_sha256="0" * 64,
        chat_template=chat,
        runtime=RuntimeConfig(threads=1, ctx=ctx, jinja=chat, parallel=parallel, batch=512, ubatch=512),
        ctx_source="default",
        sources=["test"],
        pp_ts=pp,
        tg_ts=tg,
        peak_rss_mib=rss,
        host_fingerprint="test",
    )


def served(s: ServingSpec, mib: float = 50.0) -> Served:
    return Served(
        name=s.model,
        spec=s,
        memory=Memory(mib=s.peak_rss_mib or mib, source="measured" if s.peak_rss_mib else "predicted"),
        max_ctx=s.runtime.ctx,
    )


def table(*specs: ServingSpec, tiers: dict[str, Tier] | None = None, latency_s: float = 30.0) -> ServeTable:
    return ServeTable(
        models={s.model: served(s) for s in specs}, tiers=tiers or {}, latency_s=latency_s, source="test"
    )


@contextmanager
def running(app: Starlette) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (an ephemeral port) in a thread; yields the base URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket's proto says TCP, and a bare socket.socket() says 0. Without it Nagle holds the first SSE
    # chunk until the client ACKs the response head (its delayed ACK: +40 ms TTFT). `edgebench serve`
    # lets uvicorn bind (getaddrinfo gives IPPROTO_TCP), so it is not affected.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    )
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not t.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=60)
        sock.close()


@contextmanager
def gateway(
    tbl: ServeTable, runtime: Runtime | None, tmp: Path, **settings: object
) -> Iterator[tuple[str, Gateway]]:
    app, gw = build_app(tbl, runtime, GatewaySettings(log_dir=tmp / "logs", **settings))  # type: ignore[arg-type]
    with running(app) as url:
        yield url, gw
