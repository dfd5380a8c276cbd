"""The one subprocess runner: process groups, timeouts, SIGTERM→SIGKILL, peak RSS, exit causes.

Every llama.cpp binary (and cmake, and taskset) is started from here so that a hang, an OOM kill
or a crash is always turned into a classified `ProcResult` instead of an exception: failures are
results, and the caller stores them.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict

from edgebench.errors import ProcError

__all__ = [
    "TRANSIENT",
    "ExitCause",
    "ProcResult",
    "RssSampler",
    "classify_exit",
    "kill_group",
    "memory_status",
    "run",
    "spawn",
]

# Peak RSS is sampled, not read from rusage: children of llama-server (none today) and the
# process group as a whole are what the OS sees when it decides to OOM-kill.
SAMPLE_INTERVAL_S = 0.05
CHILD_SCAN_S = 1.0  # how often the sampler looks for new child processes
TERM_GRACE_S = 5.0


class ExitCause(StrEnum):
    OK = "ok"
    OOM = "oom-killed"
    CRASH = "crashed"
    TIMEOUT = "timeout"
    BAD_ARGS = "bad-args"
    RSS_LIMIT = "rss-limit"
    FAILED = "failed"  # non-zero exit that is none of the above
    ENVIRONMENT = "environment"  # not the config's doing: a port taken, a foreign server, a stray kill


# Failures caused by edgebench's own limits or by the environment, not properties of the config:
# stored (labelled) so the user sees them, but never reused as a result; the next run retries.
TRANSIENT = frozenset({ExitCause.TIMEOUT, ExitCause.ENVIRONMENT})


class ProcResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    argv: list[str]
    returncode: int | None
    cause: ExitCause
    detail: str  # one line: why, in the user's terms
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mib: float
    peak_anon_mib: float = 0.0  # anonymous resident memory (not file-backed): see RssSampler
    peak_swap_mib: float = 0.0  # the process's own pages in swap

    @property
    def ok(self) -> bool:
        return self.cause is ExitCause.OK


# llama.cpp's ways of saying "you asked for something impossible" (common/arg.cpp, llama-bench).
_BAD_ARGS = re.compile(
    r"(error: invalid (argument|parameter)|unknown argument|error while handling argument"
    r"|invalid value|usage: |error: unrecognized|not supported|failed to parse)",
    re.IGNORECASE,
)
_OOM_TEXT = re.compile(
    r"(failed to allocate|std::bad_alloc|out of memory|cannot allocate memory|unable to allocate)",
    re.IGNORECASE,
)


def classify_exit(
    returncode: int | None,
    stderr: str,
    *,
    timed_out: bool = False,
    rss_killed: bool = False,
    oom_hint: bool = False,
) -> tuple[ExitCause, str]:
    """Map an exit status plus stderr to a cause and a one-line detail."""
    if rss_killed:
        return ExitCause.RSS_LIMIT, "killed by edgebench: resident memory exceeded the budget"
    if timed_out:
        return ExitCause.TIMEOUT, "killed by edgebench: no exit before the timeout"
    if returncode == 0:
        return ExitCause.OK, "ok"
    last = _last_line(stderr)
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = _signame(sig)
        # The kernel OOM killer sends SIGKILL; nobody else here does (we would have said so above).
        if sig == signal.SIGKILL:
            why = "kernel OOM killer" if oom_hint or _kernel_oom_seen() else "SIGKILL from outside"
            return ExitCause.OOM, f"killed by {name} ({why})"
        return ExitCause.CRASH, f"crashed with {name}" + (f": {last}" if last else "")
    if _OOM_TEXT.search(stderr):
        return ExitCause.OOM, f"allocation failed: {_first_match_line(stderr, _OOM_TEXT)}"
    if _BAD_ARGS.search(stderr):
        return ExitCause.BAD_ARGS, f"rejected arguments: {_first_match_line(stderr, _BAD_ARGS)}"
    return ExitCause.FAILED, f"exit code {returncode}" + (f": {last}" if last else "")


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _first_match_line(text: str, pattern: re.Pattern[str]) -> str:
    for ln in text.splitlines():
        if pattern.search(ln):
            return ln.strip()[:200]
    return _last_line(text)


def _kernel_oom_seen() -> bool:
    # /proc/vmstat oom_kill counts kills since boot; a reading is only a hint, so we do not diff.
    try:
        text = Path("/proc/vmstat").read_text()
    except OSError:
        return False
    m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    return bool(m and int(m.group(1)) > 0)


def memory_status(pid: int) -> dict[str, float]:
    """RssAnon, RssFile, RssShmem and VmSwap of one process in MiB (Linux /proc/<pid>/status);
    empty when the process is gone or the kernel does not report them."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) / 1024 for k, v in _STATUS_KIB.findall(text)}


_STATUS_KIB = re.compile(r"^(RssAnon|RssFile|RssShmem|VmSwap):\s+(\d+) kB$", re.MULTILINE)


class RssSampler:
    """Samples the summed RSS of a process and its children in a background thread.

    Beside the total it keeps the anonymous part (KV cache, compute buffers, repacked weights:
    memory only swap can take back) and the process's own swap, apart from file-backed pages
    (mmap-ed weights, which the kernel can drop and re-read)."""

    def __init__(
        self, pid: int, *, limit_mib: float | None = None, on_limit: Callable[[], None] | None = None
    ) -> None:
        self.pid = pid
        self.peak_mib = 0.0
        self.peak_anon_mib = 0.0
        self.peak_swap_mib = 0.0
        self.limit_hit = False
        self._pids: list[int] = [pid]
        self._scanned = -CHILD_SCAN_S
        self._limit = limit_mib
        self._on_limit = on_limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=2)
        return self.peak_mib

    def sample(self) -> float:
        now = time.monotonic()
        if now - self._scanned >= CHILD_SCAN_S:
            # Finding children walks all of /proc (~1 ms of CPU, 2 % of a core at 20 Hz, taken
            # from the llama-bench being measured on a small board); one status file is ~40 µs.
            self._scanned = now
            try:
                root = psutil.Process(self.pid)
                self._pids = [self.pid, *(c.pid for c in root.children(recursive=True))]
            except psutil.Error:
                return 0.0
        mib = anon = swap = 0.0
        for pid in self._pids:
            st = memory_status(pid)
            if "RssAnon" in st:
                anon += st["RssAnon"]
                mib += st["RssAnon"] + st.get("RssFile", 0.0) + st.get("RssShmem", 0.0)
                swap += st.get("VmSwap", 0.0)
                continue
            with contextlib.suppress(psutil.Error):  # not Linux, or the process just exited
                mib += psutil.Process(pid).memory_info().rss / 2**20
        self.peak_mib = max(self.peak_mib, mib)
        self.peak_anon_mib = max(self.peak_anon_mib, anon)
        self.peak_swap_mib = max(self.peak_swap_mib, swap)
        return mib

    def _loop(self) -> None:
        while not self._stop.is_set():
            mib = self.sample()
            if self._limit is not None and mib > self._limit and not self.limit_hit:
                self.limit_hit = True
                if self._on_limit is not None:
                    self._on_limit()
            self._stop.wait(SAMPLE_INTERVAL_S)


def _child_setup(rlimits: Mapping[int, int]) -> Callable[[], None]:
    """Child side, before exec: die with edgebench (even on kill -9, so no llama-server outlives
    the run that started it: Linux PR_SET_PDEATHSIG) and apply resource limits. Only a prctl and
    setrlimit calls run here: safe between fork and exec."""

    def apply() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        for res, limit in rlimits.items():
            resource.setrlimit(res, (limit, limit))

    return apply


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    log_file: Path | None = None,
    inherit_env: bool = True,
    rlimits: Mapping[int, int] | None = None,
) -> subprocess.Popen[str]:
    """Start a process in its own session (process group), so a kill reaches all of it.

    `inherit_env=False` gives the child only `env` (a sandbox: no proxies, no credentials);
    `rlimits` maps `resource.RLIMIT_*` to a hard+soft limit.
    """
    full_env = {**os.environ, **(env or {})} if inherit_env else dict(env or {})
    out_target: int | object | None = stdout
    handle = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handle = log_file.open("w")
        out_target = handle
    try:
        return subprocess.Popen(
            list(argv),
            env=full_env,
            cwd=cwd,
            text=True,
            errors="replace",
            stdout=out_target,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT if log_file is not None else stderr,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=_child_setup(rlimits or {}),
        )
    except FileNotFoundError as exc:
        raise ProcError(f"{argv[0]}: cannot start: not found") from exc
    except PermissionError as exc:
        raise ProcError(f"{argv[0]}: cannot start: permission denied (not executable?)") from exc
    except OSError as exc:
        raise ProcError(f"{argv[0]}: cannot start: {exc.strerror or exc}") from exc
    finally:
        if handle is not None:
            handle.close()  # the child holds its own descriptor


def kill_group(proc: subprocess.Popen[str], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after the grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)


def run(
    argv: Sequence[str],
    *,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    rss_limit_mib: float | None = None,
    log_file: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    inherit_env: bool = True,
    rlimits: Mapping[int, int] | None = None,
) -> ProcResult:
    """Run to completion; never raises for what the child does, only when it cannot start.

    `on_line` receives each output line as it arrives (cmake progress); with it, stderr is merged
    into stdout. `log_file` additionally keeps everything on disk.
    """
    merged = on_line is not None
    proc = spawn(
        argv,
        env=env,
        cwd=cwd,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        inherit_env=inherit_env,
        rlimits=rlimits,
    )
    limit_state: dict[str, bool] = {"hit": False}

    def _on_limit() -> None:
        limit_state["hit"] = True
        kill_group(proc, grace_s=1.0)

    sampler = RssSampler(proc.pid, limit_mib=rss_limit_mib, on_limit=_on_limit).start()
    t0 = time.monotonic()
    timed_out = False
    out_chunks: list[str] = []
    err_text = ""
    log = log_file.open("w") if log_file is not None else None
    try:
        if merged:

            def _expire() -> None:
                limit_state["timeout"] = True
                kill_group(proc)

            timer = threading.Timer(timeout_s, _expire) if timeout_s else None
            if timer:
                timer.start()
            for line in proc.stdout or ():
                out_chunks.append(line)
                if log:
                    log.write(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            proc.wait()
            if timer:
                timer.cancel()
            timed_out = limit_state.get("timeout", False)
        else:
            try:
                out, err_text = proc.communicate(timeout=timeout_s)
                out_chunks.append(out)
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(proc)
                out, err_text = proc.communicate()
                out_chunks.append(out)
            if log:
                log.write("".join(out_chunks) + err_text)
    finally:
        peak = sampler.stop()
        if log:
            log.close()
        if proc.poll() is None:
            kill_group(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    stdout = "".join(out_chunks)
    stderr = stdout if merged else err_text
    cause, detail = classify_exit(proc.returncode, stderr, timed_out=timed_out, rss_killed=limit_state["hit"])
    return ProcResult(
        argv=list(argv),
        returncode=proc.returncode,
        cause=cause,
        detail=detail,
        stdout=stdout,
        stderr=err_text,
        wall_s=time.monotonic() - t0,
        peak_rss_mib=peak,
        peak_anon_mib=sampler.peak_anon_mib,
        peak_swap_mib=sampler.peak_swap_mib,
    )
