"""One measurement at a time per host: a host-wide lock around every measuring command.

Two sweeps on the same cores both measure contended numbers, and the last writer's rows win
without a warning. Measuring commands (sweep, context, quality, run, plan --check) hold this lock
for as long as they measure; a second one waits with a message naming the holder, or refuses at
once with --no-wait. The lock is an flock (filelock): the kernel drops it when its holder dies,
even by kill -9, so a stale lock file never blocks anyone.

The path is host-wide, not per data dir (two data dirs still share the cores): $EDGEBENCH_LOCK,
else /run/lock/edgebench-measure.lock, else the temp dir.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from edgebench.errors import EdgebenchError
from edgebench.textsafe import one_line

__all__ = ["HostBusy", "holder", "lock_path", "measuring"]

_depth = 0  # re-entry inside one process (run → its stages) takes the lock once


class HostBusy(EdgebenchError):
    """Another edgebench measurement holds the host and the caller chose not to wait."""


def lock_path() -> Path:
    env = os.environ.get("EDGEBENCH_LOCK")
    if env:
        return Path(env)
    run_lock = Path("/run/lock")
    base = run_lock if run_lock.is_dir() and os.access(run_lock, os.W_OK) else Path(tempfile.gettempdir())
    return base / "edgebench-measure.lock"


def holder(path: Path | None = None) -> str:
    """Who holds the lock, as written by the holder: 'pid N (edgebench sweep …) since HH:MM:SS'."""
    try:
        info = json.loads((path or lock_path()).read_text())
        return one_line(f"pid {info['pid']} ({info['cmd']}) since {info['since']}", 200)
    except (OSError, ValueError, KeyError, TypeError):
        return "another edgebench process"


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "cmd": " ".join(["edgebench", *sys.argv[1:]])[:160],
        "since": time.strftime("%H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


@contextmanager
def measuring(*, wait: bool = True, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the host for a measurement. Waits (telling `say` once, with the holder) unless
    `wait` is False, in which case a busy host raises HostBusy."""
    global _depth
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    path = lock_path()
    try:
        lock = FileLock(str(path), mode=0o666, on_acquired=_write_holder, preserve_lock_file=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            who = holder(path)
            if not wait:
                raise HostBusy(
                    f"host lock {path}: another measurement is running ({who}); wait for it or drop --no-wait"
                ) from None
            if say is not None:
                say(f"waiting for the host: another measurement is running ({who}) — --no-wait to refuse")
            lock.acquire()
    except OSError as exc:
        raise EdgebenchError(f"host lock {path}: cannot take it: {exc.strerror or exc}") from exc
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        lock.release()
