"""The one subprocess runner: process groups, timeouts, SIGTERM→SIGKILL, peak RSS, exit causes.

Every llama.cpp binary (and cmake, and taskset) is started from here so that a hang, an OOM kill
or a crash is always turned into a classified `ProcResult` instead of an exception: failures are
results, and the caller stores them.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import math
import os
import re
import resource
import select
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict

from edgebench.errors import ProcError
from edgebench.textsafe import one_line, printable

__all__ = [
    "TRANSIENT",
    "ExitCause",
    "ProcResult",
    "RssSampler",
    "classify_exit",
    "kill_group",
    "memory_status",
    "output_lines",
    "run",
    "spawn",
]

# Peak RSS is sampled (the group's sum, what the OS sees when it decides to OOM-kill, and the
# watchdog's input), with the kernel's own ru_maxrss of the reaped child as a floor: a process of a
# few milliseconds is over before the first sample (issue 10: a 14 ms llama-bench "peaked" at 0).
# But Linux starts a forked child's high-water mark at its parent's RSS and keeps it across exec,
# so ru_maxrss never reads below what edgebench itself held at the fork (a 200 MiB test session
# made every fake bench "peak" at 207.7 MiB): it counts only when clearly above that.
SAMPLE_INTERVAL_S = 0.05
# Without a limit to enforce, a sample that makes no new high-water mark stretches the next wait
# ×1.5 up to STEADY_INTERVAL_S; a new peak (more than RISE_MIB up) brings back 20 Hz. A llama-bench
# process holds its memory from load to exit: at 20 Hz the sampler took ~1 % of a core (~0.4 ms a
# sample beside a 2-thread run), from the run being measured on a 2-core host. A spike shorter than
# the slow pace is still in the kernel's ru_maxrss of the child, the floor taken at reaping.
STEADY_INTERVAL_S = 0.8
BACKOFF = 1.5
RISE_MIB = 1.0
INHERITED_MARGIN_MIB = 32.0  # what the child adds before exec (preexec_fn) on top of our copy
CHILD_SCAN_S = 1.0  # how often the sampler looks for new child processes
TERM_GRACE_S = 5.0
# After the leader exited and its group was killed, how long output may still drain: only a
# process that left the group (setsid) can hold the pipes longer, and we stop reading it.
DRAIN_S = 2.0
DETAIL_CHARS = 240


class ExitCause(StrEnum):
    OK = "ok"
    OOM = "oom-killed"
    CRASH = "crashed"
    TIMEOUT = "timeout"
    BAD_ARGS = "bad-args"
    RSS_LIMIT = "rss-limit"
    FAILED = "failed"  # non-zero exit that is none of the above
    INVALID_OUTPUT = "invalid-output"  # exited 0 but printed what cannot be a result (NaN t/s …)
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
    cpu_s: float = 0.0  # its user + system CPU seconds (the kernel's, at reaping; 0 when not reaped)

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
    """Map an exit status plus stderr to a cause and a one-line detail. The detail quotes the
    line that says why (an assert, an exception, llama.cpp's error line), never terminal escapes."""
    if rss_killed:
        return ExitCause.RSS_LIMIT, "killed by edgebench: resident memory exceeded the budget"
    if timed_out:
        return ExitCause.TIMEOUT, "killed by edgebench: no exit before the timeout"
    if returncode == 0:
        return ExitCause.OK, "ok"
    lines = output_lines(stderr)
    why = _reason_line(lines)
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = _signame(sig)
        # The kernel OOM killer sends SIGKILL; nobody else here does (we would have said so above).
        if sig == signal.SIGKILL:
            oom = "kernel OOM killer" if oom_hint or _kernel_oom_seen() else "SIGKILL from outside"
            return ExitCause.OOM, f"killed by {name} ({oom})"
        return ExitCause.CRASH, _detail(f"crashed with {name}", why)
    if line := _first_match(lines, _OOM_TEXT):
        return ExitCause.OOM, _detail("allocation failed", line)
    if line := _first_match(lines, _BAD_ARGS):
        return ExitCause.BAD_ARGS, _detail("rejected arguments", line)
    return ExitCause.FAILED, _detail(f"exit code {returncode}", why)


# ggml_abort runs gdb for a backtrace when it can, and a shell adds its epitaph: lines that say
# nothing about why llama.cpp stopped, yet came last (issue 10: "[Inferior 1 (process N) detached]").
_NOISE = re.compile(
    r"^(\[(New |Inferior |Thread |Detaching )|Using host libthread_db|#\d+\s|0x[0-9a-f]+ in |"
    r"\d*\s*\.\./\S+: No such file|No stack\.|ptrace: |warning: |The program is not being run|"
    r"Could not attach|\(gdb\)|Aborted|Segmentation fault|Killed$)",
    re.IGNORECASE,
)
# Lines that name the reason, best first: an assert or an exception's message, an error line, a
# failure. The first match of the best kind wins: the root cause comes before its consequences
# ("error loading model: key … has wrong type" before "exiting due to model loading error").
_REASONS = (
    # ggml_abort prints "file.c:line: message" (GGML_ASSERT(...) failed, or GGML_ABORT's text)
    re.compile(r"GGML_ASSERT|GGML_ABORT|\bwhat\(\):|^\S+\.(c|cc|cpp|cu|h|m):\d+: "),
    re.compile(r"terminate called|\berror\b\s*:|error loading|exception", re.IGNORECASE),
    re.compile(r"\b(failed|cannot|unable|invalid|not supported|no such)\b", re.IGNORECASE),
)
_TAIL_LINES = 40  # a verbose log's early lines are not why it stopped; asserts are searched in full


def output_lines(text: str) -> list[str]:
    """A process's output as stripped, non-empty lines, escapes removed and control characters
    shown as \\xNN (textsafe.printable): what patterns are matched against and causes quoted from."""
    # Carriage returns (progress redraws) end lines too.
    text = printable(text.replace("\r\n", "\n").replace("\r", "\n"))
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _reason_line(lines: Sequence[str]) -> str:
    """The line of a failed process's output that says why it failed: see _REASONS; else the last
    line that is not debugger or shell noise. One line, control characters escaped."""
    meaningful = [ln for ln in lines if not _NOISE.match(ln)]
    for i, pattern in enumerate(_REASONS):
        scope = meaningful if i == 0 else meaningful[-_TAIL_LINES:]
        if line := _first_match(scope, pattern):
            return line
    return one_line(meaningful[-1]) if meaningful else ""


def _detail(head: str, line: str) -> str:
    return one_line(f"{head}: {line}" if line else head, DETAIL_CHARS)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _first_match(lines: Sequence[str], pattern: re.Pattern[str]) -> str:
    return next((one_line(ln) for ln in lines if pattern.search(ln)), "")


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
    (mmap-ed weights, which the kernel can drop and re-read).

    `interval_s` may be raised while it runs (`slow_down`): a server that only needs watching once
    loaded should not take 20 samples a second from the inference beside it. Without a limit the
    pace also slows by itself while no new peak is made (STEADY_INTERVAL_S)."""

    def __init__(
        self, pid: int, *, limit_mib: float | None = None, on_limit: Callable[[], None] | None = None
    ) -> None:
        self.pid = pid
        self.interval_s = SAMPLE_INTERVAL_S
        self.child_scan_s = CHILD_SCAN_S
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
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=2)
        return self.peak_mib

    def slow_down(self, interval_s: float, child_scan_s: float) -> None:
        self.interval_s, self.child_scan_s = interval_s, child_scan_s

    def sample(self) -> float:
        now = time.monotonic()
        if now - self._scanned >= self.child_scan_s:
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
        wait = self.interval_s
        while not self._stop.is_set():
            before = self.peak_mib
            mib = self.sample()
            if self._limit is not None:  # a watchdog: always at the set pace
                wait = self.interval_s
                if mib > self._limit and not self.limit_hit:
                    self.limit_hit = True
                    if self._on_limit is not None:
                        self._on_limit()
            elif self.peak_mib > before + RISE_MIB:
                wait = self.interval_s
            else:
                wait = max(self.interval_s, min(wait * BACKOFF, STEADY_INTERVAL_S))
            self._stop.wait(wait)


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
    measured: bool = False,
) -> subprocess.Popen[str]:
    """Start a process in its own session (process group), so a kill reaches all of it.

    `inherit_env=False` gives the child only `env` (a sandbox: no proxies, no credentials);
    `rlimits` maps `resource.RLIMIT_*` to a hard+soft limit. `measured`: a run whose speed is the
    result gets the user's environment byte for byte, plus only `env` (see below).
    """
    # ggml's abort handler attaches gdb for a backtrace when gdb is installed: on a busy host that
    # kept a crashed llama-bench (an RPC worker gone) alive for over two minutes, and its output
    # is noise in front of the GGML_ASSERT line we keep (for a backtrace, run llama.cpp by hand).
    # Not in a measured run: the environment alone moves llama.cpp's speed. On the test host
    # this one variable more cost llama-bench t1 q8_0 pp512 3.5 % [1.8, 5.2] (122 rotated rounds
    # against the same argv in the user's environment), another of the same size 4.5 %: it was
    # why edgebench's figures read low against llama-bench run by hand (bench/fidelity.py).
    quiet = {} if measured else {"GGML_NO_BACKTRACE": "1"}
    base = {**quiet, **os.environ} if inherit_env else {}
    full_env = {**base, **(env or {})}
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


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (Linux ≥ 5.3), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(proc: subprocess.Popen[str]) -> bool:
    """Has the leader exited? Without reaping it: a zombie keeps its pid, so its group id cannot
    be handed to another process while we may still signal the group."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by Popen in another thread: it holds the status
        return True


def _wait_exit(proc: subprocess.Popen[str], timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the leader to exit, without reaping it (see _exited)."""
    deadline = time.monotonic() + timeout_s
    fd = _pidfd(proc.pid)
    step = 0.001
    try:
        while not _exited(proc):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if fd is not None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                poller.poll(left * 1000)
            else:
                time.sleep(min(step, left))
                step = min(step * 2, 0.05)
        return True
    finally:
        if fd is not None:
            os.close(fd)


def kill_group(proc: subprocess.Popen[str], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after the grace period.

    The group is signalled even when its leader already exited: the group outlives its leader, and
    a grandchild left in it (a backgrounded helper) may hold our pipes open for as long as it runs.
    """
    _signal_group(proc.pid, signal.SIGTERM)
    _wait_exit(proc, grace_s)
    _signal_group(proc.pid, signal.SIGKILL)  # a lingering leader, and strays that outlived it
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)  # Popen reaps (thread-safe with its other waits)


def _own_rss_mib() -> float:
    try:
        return float(psutil.Process().memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def _reap(proc: subprocess.Popen[str]) -> tuple[float, float]:
    """Reap the exited leader ourselves, for the kernel's accounting of it: returns ru_maxrss in
    MiB (its own peak and that of the descendants it waited for) and its user + system CPU
    seconds. Popen is told the status."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped (by Popen): no usage to read
        proc.poll()
        return 0.0, 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports KiB, macOS bytes.
    return usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024), usage.ru_utime + usage.ru_stime


class _Output:
    """A child's pipes read without blocking and without a thread: bytes in, text out (UTF-8 with
    replacement and universal newlines, as Popen's text mode), whole lines to `on_line`."""

    def __init__(
        self, proc: subprocess.Popen[str], on_line: Callable[[str], None] | None, log: io.TextIOBase | None
    ) -> None:
        self.sel = selectors.DefaultSelector()
        self.text: dict[str, list[str]] = {}
        self._dec: dict[str, io.IncrementalNewlineDecoder] = {}
        self._fds: list[int] = []
        self._on_line, self._log, self._partial = on_line, log, ""
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr)):
            if pipe is not None:
                fd = pipe.fileno()
                self._fds.append(fd)
                self.text[name] = []
                self._dec[name] = io.IncrementalNewlineDecoder(
                    codecs.getincrementaldecoder("utf-8")(errors="replace"), translate=True
                )
                self.sel.register(fd, selectors.EVENT_READ, name)

    @property
    def open(self) -> bool:
        return any(k.fd in self._fds for k in self.sel.get_map().values())

    def watch(self, fd: int) -> None:
        self.sel.register(fd, selectors.EVENT_READ, "exit")

    def pump(self, timeout_s: float | None) -> None:
        """Read what is ready within `timeout_s` (None: until something is), or until a watched
        process exits."""
        for key, _ in self.sel.select(timeout_s):
            if key.data == "exit":
                self.sel.unregister(key.fd)  # readable for good: the caller sees the exit
                continue
            data = os.read(key.fd, 65536)
            if not data:
                self.sel.unregister(key.fd)
            self._take(key.data, data)

    def _take(self, name: str, data: bytes) -> None:
        chunk = self._dec[name].decode(data, final=not data)  # b"": end of stream
        if chunk:
            self.text[name].append(chunk)
            if self._log is not None and self._on_line is not None:
                self._log.write(chunk)  # the merged stream (a build) is logged as it comes
        if self._on_line is not None:
            *done, self._partial = (self._partial + chunk).split("\n")
            for line in done:
                self._on_line(line)
            if not data and self._partial:  # the last line had no newline
                self._on_line(self._partial)
                self._partial = ""

    def close(self) -> None:
        self.sel.close()

    def result(self, name: str) -> str:
        return "".join(self.text.get(name, []))


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
    measured: bool = False,
) -> ProcResult:
    """Run to completion; never raises for what the child does, only when it cannot start.

    `on_line` receives each output line as it arrives (cmake progress); with it, stderr is merged
    into stdout. `log_file` additionally keeps everything on disk. `measured`: see `spawn`.

    The timeout bounds the whole call, not only the leader: when the leader exits, whatever it
    left in its process group is killed (it could hold our pipes open for ever), and output is
    read for at most DRAIN_S more (a process that left the group is not waited for).
    """
    merged = on_line is not None
    inherited = _own_rss_mib() + INHERITED_MARGIN_MIB  # see INHERITED_MARGIN_MIB
    proc = spawn(
        argv,
        env=env,
        cwd=cwd,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        inherit_env=inherit_env,
        rlimits=rlimits,
        measured=measured,
    )
    t0 = time.monotonic()
    limit_hit = False

    def _on_limit() -> None:  # the sampler's thread: signal only; run() itself waits and reaps
        nonlocal limit_hit
        limit_hit = True
        _signal_group(proc.pid, signal.SIGTERM)

    sampler = RssSampler(proc.pid, limit_mib=rss_limit_mib, on_limit=_on_limit)
    deadline = t0 + max(0.0, timeout_s) if timeout_s is not None and math.isfinite(timeout_s) else None
    log: io.TextIOBase | None = None
    out: _Output | None = None
    pidfd = _pidfd(proc.pid)
    timed_out = exited = reaped = False
    kernel_peak = cpu_s = 0.0
    try:
        sampler.start()
        log = log_file.open("w") if log_file is not None else None
        out = _Output(proc, on_line, log)
        if pidfd is not None:
            out.watch(pidfd)
        stage_end: float | None = None  # when the current kill stage (TERM, then KILL) gives up
        stage = 0  # 0 running, 1 SIGTERM sent, 2 SIGKILL sent
        drain_end: float | None = None
        step = 0.001  # polling interval when there is no pidfd
        while True:
            now = time.monotonic()
            if not exited and _exited(proc):
                exited = True
                _signal_group(proc.pid, signal.SIGKILL)  # strays: nothing of this run outlives it
                drain_end = now + DRAIN_S
            if exited:
                if not out.open or (drain_end is not None and now >= drain_end):
                    break
            elif stage == 0 and (limit_hit or (deadline is not None and now >= deadline)):
                timed_out = not limit_hit
                _signal_group(proc.pid, signal.SIGTERM)
                stage, stage_end = 1, now + (1.0 if limit_hit else TERM_GRACE_S)
            elif stage == 1 and stage_end is not None and now >= stage_end:
                _signal_group(proc.pid, signal.SIGKILL)
                stage, stage_end = 2, now + TERM_GRACE_S
            elif stage == 2 and stage_end is not None and now >= stage_end:
                break  # unkillable (uninterruptible sleep): stop waiting for it
            end = drain_end if exited else deadline if stage == 0 else stage_end
            wait = None if end is None else max(0.0, end - now)
            if not exited:
                if rss_limit_mib is not None:  # the watchdog's flag is looked at this often
                    wait = SAMPLE_INTERVAL_S if wait is None else min(wait, SAMPLE_INTERVAL_S)
                if pidfd is None:  # no exit notification: poll, 1 ms doubling to 50 ms
                    wait = step if wait is None else min(wait, step)
                    step = min(step * 2, 0.05)
            out.pump(wait)
        sampler.stop()  # before reaping: the sampler may still signal the group
        if exited:
            kernel_peak, cpu_s = _reap(proc)
            reaped = True
    finally:
        sampler.stop()
        if not reaped and proc.returncode is None:
            kill_group(proc, grace_s=1.0)  # interrupted (Ctrl-C), or an unkillable leader
        if out is not None:
            out.close()
        if pidfd is not None:
            os.close(pidfd)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        if log is not None:
            if not merged and out is not None:
                log.write(out.result("out") + out.result("err"))
            log.close()
    stdout = out.result("out")
    stderr = out.result("err")
    cause, detail = classify_exit(
        proc.returncode, stdout if merged else stderr, timed_out=timed_out, rss_killed=limit_hit
    )
    return ProcResult(
        argv=list(argv),
        returncode=proc.returncode,
        cause=cause,
        detail=detail,
        stdout=stdout,
        stderr=stderr,
        wall_s=time.monotonic() - t0,
        peak_rss_mib=max(sampler.peak_mib, kernel_peak if kernel_peak > inherited else 0.0),
        peak_anon_mib=sampler.peak_anon_mib,
        peak_swap_mib=sampler.peak_swap_mib,
        cpu_s=cpu_s,
    )
