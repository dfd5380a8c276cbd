"""llama-server lifecycle: start with a RuntimeConfig, wait for /health, sample RSS, stop cleanly.

`/health` answers 503 while the model loads, so startup time is the time until it answers 200;
`poll()` is checked on every wait so a crash is reported as a crash, not as a timeout.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from edgebench.errors import EdgebenchError
from edgebench.runtime import proc
from edgebench.runtime.flags import RuntimeConfig, server_argv
from edgebench.runtime.locate import Runtime

__all__ = ["ServerFailed", "ServerProcess", "fixed_completion", "free_port", "listening_pid"]

PORT_ATTEMPTS = 3  # a port taken between free_port() and the bind: try another, then give up
# glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so blocks
# below that come from the heap and stay resident after free. Without flash attention ggml-cpu's
# work buffer grows ubatch by ubatch as the context fills, and each outgrown buffer stayed: 12-17 MiB
# more RSS at a 4k fill on two zoo models (bench/planner_accuracy: RSS@fill -14.7 % → -2.8 %, -8.8 %
# → +1.3 % with the threshold fixed). Fixed at glibc's own default it returns them to the OS: a
# leaner server on a small board, and one the memory planner predicts. A value set by the user wins.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
_BIND_FAILED = re.compile(r"couldn't bind|address already in use|failed to bind", re.IGNORECASE)


class ServerFailed(EdgebenchError):
    """The server exited or never became ready; `cause` classifies it like any other run. Stages
    store it as a failed row; reaching the CLI it is one line like any other error."""

    def __init__(self, cause: proc.ExitCause, detail: str, log_tail: str) -> None:
        super().__init__(f"llama-server {cause.value}: {detail}")
        self.cause = cause
        self.detail = detail
        self.log_tail = log_tail


def fixed_completion(n_prompt: int, n_predict: int, n_vocab: int, seed: int) -> dict[str, object]:
    """A `/completion` body that measures the engine: exactly n_prompt random token ids (no
    tokenizer, and not one repeated token, which biases MoE routing: llama.cpp #6069), no prompt
    cache, exactly n_predict greedy tokens (EOS ignored, top-k 1 so sampling costs nothing)."""
    rng = random.Random(seed)
    lo = min(1000, max(10, n_vocab // 10))  # skip the low ids, where special tokens live
    return {
        "prompt": [rng.randrange(lo, n_vocab) for _ in range(n_prompt)],
        "n_predict": n_predict,
        "cache_prompt": False,
        "ignore_eos": True,
        "samplers": ["top_k"],
        "top_k": 1,
        "seed": seed,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_pid(port: int) -> int | None:
    """The pid listening on 127.0.0.1:`port` (TCP), or None when nobody we can see listens."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


def _descends_from(pid: int, ancestor: int) -> bool:
    try:
        return any(p.pid == ancestor for p in psutil.Process(pid).parents())
    except psutil.Error:
        return False


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


class ServerProcess:
    """`with ServerProcess(rt, model, cfg, log) as srv: srv.client.post(...)`."""

    def __init__(
        self,
        runtime: Runtime,
        model_path: str,
        cfg: RuntimeConfig,
        log_file: Path,
        *,
        ready_timeout_s: float = 300,
        rss_limit_mib: float | None = None,
        verbose: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._runtime, self.model_path, self._cfg, self._verbose = runtime, model_path, cfg, verbose
        self._env = dict(env or {})  # e.g. LLAMA_ATTN_ROT_DISABLE for the KV lab
        self._use_port(free_port())
        self.log_file = log_file
        self.ready_timeout_s = ready_timeout_s
        self.rss_limit_mib = rss_limit_mib
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._sampler: proc.RssSampler | None = None

    def _use_port(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.argv = server_argv(
            self._runtime.binary("llama-server"),
            self.model_path,
            self._cfg,
            port=port,
            dialect=self._runtime.dialect,
            verbose=self._verbose,
        )
        self.client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(600, connect=5))

    @property
    def peak_rss_mib(self) -> float:
        return self._sampler.peak_mib if self._sampler else 0.0

    @property
    def peak_anon_mib(self) -> float:
        return self._sampler.peak_anon_mib if self._sampler else 0.0

    @property
    def peak_swap_mib(self) -> float:
        return self._sampler.peak_swap_mib if self._sampler else 0.0

    def watch_slowly(self, interval_s: float = 1.0, child_scan_s: float = 30.0) -> None:
        """Once loaded, sample its memory at `interval_s` instead of 20 Hz: a long-lived server (the
        gateway's) is watched for what it holds, not for a peak to measure; each sample and each
        walk of /proc for children is CPU taken from its inference on a 2-core board."""
        if self._sampler is not None:
            self._sampler.slow_down(interval_s, child_scan_s)

    @property
    def rss_limit_hit(self) -> bool:
        return bool(self._sampler and self._sampler.limit_hit)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else -1

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> ServerProcess:
        """Start and wait until *our* llama-server answers /health. A port another process took
        first (the bind failed, or a foreign server answers there) is retried on a new port and
        reported as an environment failure, never as the config's."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start_once()
            except ServerFailed as exc:
                if exc.cause is not proc.ExitCause.ENVIRONMENT or attempt == PORT_ATTEMPTS - 1:
                    raise
                self.client.close()
                self._use_port(free_port())
        raise AssertionError("unreachable")

    def _start_once(self) -> ServerProcess:
        env = {} if "MALLOC_MMAP_THRESHOLD_" in os.environ else dict(MALLOC_ENV)
        self._proc = proc.spawn(self.argv, log_file=self.log_file, env={**env, **self._env})
        p = self._proc
        self._sampler = proc.RssSampler(
            p.pid, limit_mib=self.rss_limit_mib, on_limit=lambda: proc.kill_group(p, grace_s=1)
        ).start()
        t0 = time.monotonic()
        while True:
            if p.poll() is not None:
                self._fail(timed_out=False)
            try:
                if self.client.get("/health", timeout=2).status_code == 200:
                    self._check_ours()
                    self.startup_s = time.monotonic() - t0
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > self.ready_timeout_s:
                self._fail(timed_out=True)
            time.sleep(0.1)

    def _check_ours(self) -> None:
        """The server answering on our port must be the process we started, serving our model:
        another server already on the port would otherwise be measured as this config."""
        p = self._proc
        assert p is not None
        owner = listening_pid(self.port)
        ours = owner is not None and (owner == p.pid or _descends_from(owner, p.pid))
        why = None
        if not ours:
            who = f"pid {owner}" if owner is not None else "a process we cannot see"
            why = f"port {self.port} is answered by {who}, not by our llama-server (pid {p.pid})"
        else:
            try:
                r = self.client.get("/props", timeout=5)
                path = r.json().get("model_path") if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                path = None
            if isinstance(path, str) and not _same_file(path, self.model_path):
                why = f"the server on port {self.port} serves {path!r}, not {self.model_path!r}"
        if why is not None:
            proc.kill_group(p, grace_s=2)
            self.stop()
            raise ServerFailed(proc.ExitCause.ENVIRONMENT, why, "")

    def _fail(self, *, timed_out: bool) -> None:
        p = self._proc
        if p is not None and p.poll() is None:
            proc.kill_group(p)
        log = self.log_text()
        rss_hit = bool(self._sampler and self._sampler.limit_hit)
        cause, detail = proc.classify_exit(
            p.returncode if p else None, log, timed_out=timed_out, rss_killed=rss_hit
        )
        if not timed_out and not rss_hit and _BIND_FAILED.search(log):
            cause, detail = proc.ExitCause.ENVIRONMENT, f"port {self.port} was taken by another process"
        self.stop()
        raise ServerFailed(cause, detail, "\n".join(log.splitlines()[-20:]))

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = 10) -> int | None:
        """SIGTERM (llama-server prints its memory breakdown on exit), SIGKILL if it lingers."""
        if self._proc is not None:
            proc.kill_group(self._proc, grace_s=grace_s)
        if self._sampler is not None:
            self._sampler.stop()
        self.client.close()
        return self._proc.returncode if self._proc else None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
