"""`edgebench worker`: this board as an RPC worker for a head that runs a model too big for one."""

from __future__ import annotations

import signal
import threading

import typer

from edgebench.cli._common import console, state
from edgebench.fleet.worker import RpcWorker, check_bind
from edgebench.hostaddr import is_loopback
from edgebench.setup import ensure_runtime

__all__ = ["register"]


def worker(
    host: str = typer.Option("127.0.0.1", "--host", "-H", help="Address to bind (loopback unless --expose)."),
    port: int = typer.Option(50052, "--port", "-p", min=1, max=65535),
    threads: int = typer.Option(2, "--threads", "-t", min=1),
    expose: bool = typer.Option(
        False,
        "--expose",
        help="Allow a non-loopback bind: rpc-server has no authentication (trusted LAN only).",
    ),
    mem_cap_mib: float | None = typer.Option(None, "--mem-cap-mib", help="Cap rpc-server's address space."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="rpc-server's tensor cache (-c)."),
) -> None:
    """Run llama.cpp's rpc-server until interrupted; the head names it with --rpc HOST:PORT."""
    check_bind(host, expose=expose)  # before anything is built or started
    cfg = state.config
    runtime = ensure_runtime(cfg)
    cache_dir = cfg.cache_dir / "rpc-cache" if cache else None
    log = cfg.data_dir / "logs" / f"rpc-server-{port}.log"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with RpcWorker(runtime, host, port, threads=threads, expose=expose, mem_cap_mib=mem_cap_mib,
                   cache_dir=cache_dir, log_file=log) as w:  # fmt: skip
        console.print(f"rpc worker on {w.endpoint} (log {log}); the head: --rpc {w.endpoint}")
        if not is_loopback(host):
            console.print("[yellow]exposed: anyone who reaches this address can run tensors here[/yellow]")
        try:
            while w.alive() and not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        if not w.alive():
            console.print(f"rpc-server exited ({w.proc.returncode if w.proc else '?'}); log: {log}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
