"""`edgebench worker`: this board as an RPC worker for a head that runs a model too big for one."""

from __future__ import annotations

import signal
import threading

import typer

from edgebench.cli._common import console, state
from edgebench.fleet.probe import ProbeServer
from edgebench.fleet.worker import RpcWorker, check_bind
from edgebench.host.probe import probe_host
from edgebench.hostaddr import is_loopback
from edgebench.setup import ensure_runtime

__all__ = ["register"]


def worker(
    host: str = typer.Option("127.0.0.1", "--host", "-H", help="Address to bind (loopback unless --expose)."),
    port: int = typer.Option(
        50052, "--port", "-p", min=1, max=65534, help="rpc-server's port; its host probe: +1."
    ),
    threads: int | None = typer.Option(
        None, "--threads", "-t", min=1, help="rpc-server threads (default: every CPU; 1 on a shared machine)."
    ),
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
    info = probe_host()
    usable = cfg.budgets.usable_mib(info.ram_total_mib)
    if mem_cap_mib is not None:
        usable = min(usable, mem_cap_mib)
    record = {**info.model_dump(mode="json"), "usable_mib": usable, "rpc": f"{host}:{port}"}
    probe = ProbeServer(host, port + 1, record)  # binds now: a taken port stops us before rpc-server starts
    with (
        probe,
        RpcWorker(runtime, host, port, threads=threads or info.n_cpus, expose=expose, mem_cap_mib=mem_cap_mib,
                  cache_dir=cache_dir, log_file=log) as w,
    ):  # fmt: skip
        console.print(f"rpc worker on {w.endpoint} (log {log}); the head: --rpc {w.endpoint}")
        console.print(f"host probe: http://{host}:{port + 1}/host ({usable:.0f} MiB usable)")
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
