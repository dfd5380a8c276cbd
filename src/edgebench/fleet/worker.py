"""An RPC worker: llama.cpp's rpc-server, bound where the user says and nowhere else by default.

rpc-server has no authentication and no encryption (its README: "never run the RPC server on an
open network"): anyone who reaches its port can send tensors and graphs to run. So a worker binds
to loopback unless the user says --expose, and then only to the address named (never 0.0.0.0
without saying so twice: --expose and the address itself)."""

from __future__ import annotations

import ipaddress
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from edgebench.errors import ConfigError, EdgebenchError
from edgebench.hostaddr import is_loopback
from edgebench.runtime import proc
from edgebench.runtime.flags import rpc_server_argv
from edgebench.runtime.locate import Runtime

__all__ = ["RpcWorker", "WorkerError", "check_bind"]


class WorkerError(EdgebenchError):
    """An rpc-server that would not start or answer (the cause in one line)."""


def check_bind(host: str, *, expose: bool) -> None:
    """Loopback is always allowed; any other address only with explicit consent."""
    if is_loopback(host):
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"--host {host!r}: give an IP address to bind to (or localhost)") from None
    if not expose:
        raise ConfigError(
            f"--host {host}: rpc-server has no authentication — anyone who reaches {host} can run "
            "tensors on this board; bind to 127.0.0.1 (and tunnel), or pass --expose on a trusted network"
        )


class RpcWorker:
    """`with RpcWorker(rt, "127.0.0.1", 50052) as w:` — rpc-server running and accepting.

    `prefix` runs it inside something (the tests: `ip netns exec NS`); `mem_cap_mib` caps its
    address space (rpc-server has no memory option of its own); `cache_dir` is its tensor cache
    (`-c`, LLAMA_CACHE), so a restarted worker does not receive the same weights again."""

    def __init__(
        self,
        runtime: Runtime,
        host: str,
        port: int,
        *,
        threads: int = 2,
        expose: bool = False,
        mem_cap_mib: float | None = None,
        cache_dir: Path | None = None,
        log_file: Path | None = None,
        prefix: Sequence[str] = (),
        ready_timeout_s: float = 30,
    ) -> None:
        check_bind(host, expose=expose)
        self.host, self.port = host, port
        binary = runtime.binary("rpc-server")
        self.argv = [
            *prefix,
            *rpc_server_argv(binary, host, port, threads=threads, cache=cache_dir is not None),
        ]
        self.env = {"LLAMA_CACHE": str(cache_dir)} if cache_dir is not None else {}
        self.rlimits = {resource.RLIMIT_AS: int(mem_cap_mib * 2**20)} if mem_cap_mib else None
        self.log_file, self.ready_timeout_s = log_file, ready_timeout_s
        self.proc: subprocess.Popen[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> RpcWorker:
        self.proc = proc.spawn(self.argv, env=self.env, log_file=self.log_file, rlimits=self.rlimits,
                               stdout=None if self.log_file else subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerError(f"rpc-server {self.endpoint}: exited with {self.proc.returncode} at start"
                                  + (f" (log: {self.log_file})" if self.log_file else ""))  # fmt: skip
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise WorkerError(f"rpc-server {self.endpoint}: not accepting after {self.ready_timeout_s:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Die as a board does when unplugged (SIGKILL, no goodbye)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # spawn put it in its own process group
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            proc.kill_group(self.proc)
            self.proc.wait(timeout=10)

    def __enter__(self) -> RpcWorker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
