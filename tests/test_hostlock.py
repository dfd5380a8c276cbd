"""One measurement at a time per host: the lock, its waiting message, --no-wait, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgebench.hostlock import HostBusy, holder, lock_path, measuring
from helpers import edgebench

HOLD = (
    "import sys, time\n"
    "from edgebench.hostlock import measuring\n"
    "with measuring():\n"
    "    print('held', flush=True)\n"
    "    time.sleep(float(sys.argv[1]))\n"
    "    print('releasing', flush=True)\n"
)


@pytest.fixture
def lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "host.lock"
    monkeypatch.setenv("EDGEBENCH_LOCK", str(path))
    return path


def _hold(seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(seconds)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def _stop(p: subprocess.Popen[str]) -> None:
    p.kill()
    p.wait()
    if p.stdout is not None:
        p.stdout.close()


def test_second_measurement_refused_with_no_wait(lock: Path) -> None:
    p = _hold(60)
    try:
        assert lock_path() == lock
        with pytest.raises(HostBusy, match=rf"pid {p.pid} .*--no-wait"), measuring(wait=False):
            pass
        assert f"pid {p.pid}" in holder()
    finally:
        _stop(p)


def test_second_measurement_waits_and_says_who(lock: Path) -> None:
    p = _hold(1.5)
    said: list[str] = []
    try:
        with measuring(say=said.append):
            assert p.stdout is not None  # got the host only once the holder was done with it:
            assert p.stdout.readline().strip() == "releasing"
    finally:
        _stop(p)
    assert len(said) == 1 and f"pid {p.pid}" in said[0] and "--no-wait" in said[0]


def test_lock_of_a_killed_holder_is_free(lock: Path) -> None:
    p = _hold(60)
    os.kill(p.pid, signal.SIGKILL)
    _stop(p)
    with measuring(wait=False):  # the kernel dropped the flock with the process
        pass


def test_reentrant_inside_one_process(lock: Path) -> None:
    got: list[bool] = []

    def other() -> None:  # a stage in another thread of the same run is not a second measurement
        with measuring(wait=False):
            got.append(True)

    with measuring(wait=False), measuring(wait=False):
        t = threading.Thread(target=other)
        t.start()
        t.join(10)
    assert got == [True]
    _stop(_hold(0))  # and the lock was released when the outer block ended


@pytest.mark.parametrize("argv", [["sweep"], ["context"], ["quality", "run"], ["run"], ["plan", "--check"]])
def test_measuring_commands_refuse_with_no_wait(lock: Path, argv: list[str]) -> None:
    p = _hold(60)
    try:
        t0 = time.monotonic()
        r = edgebench(*argv, "--no-wait")
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgebench: error: host lock"), r.stderr
        assert f"pid {p.pid}" in lines[0]
        assert time.monotonic() - t0 < 60  # refused, not waited for the holder
    finally:
        _stop(p)
