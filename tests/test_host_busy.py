"""Busy cores from /proc/stat: recorded stat lines (fake files rewritten between the two reads) and
one real busy neighbour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgebench.host.busy import busy_cores, quality_threads, spare_cores

# user nice system idle iowait irq softirq steal guest guest_nice
_A = "cpu  1000 0 200 5000 50 0 10 0 0 0\ncpu0 500 0 100 2500 25 0 5 0 0 0\n"


def _two_reads(tmp_path: Path, first: str, second: str | None, ncpu: int) -> float | None:
    stat = tmp_path / "stat"
    stat.write_text(first)

    def sleep(_s: float) -> None:
        if second is None:
            stat.unlink()
        else:
            stat.write_text(second)

    return busy_cores(0.1, stat, ncpu=ncpu, sleep=sleep)


def test_one_of_two_cores_busy(tmp_path: Path) -> None:
    # +100 busy jiffies (user), +100 idle: half of all time, i.e. one core of two
    b = _two_reads(tmp_path, _A, "cpu  1100 0 200 5100 50 0 10 0 0 0\n", ncpu=2)
    assert b == pytest.approx(1.0)
    assert spare_cores(b, ncpu=2) == 1


def test_iowait_is_idle_and_steal_is_busy(tmp_path: Path) -> None:
    # +200 iowait only: nobody computes
    b = _two_reads(tmp_path, _A, "cpu  1000 0 200 5000 250 0 10 0 0 0\n", ncpu=4)
    assert b == pytest.approx(0.0)
    assert spare_cores(b, ncpu=4) == 4
    # +300 steal (the hypervisor's other guests), +100 idle: 3 of 4 cores gone
    b = _two_reads(tmp_path, _A, "cpu  1000 0 200 5100 50 0 10 300 0 0\n", ncpu=4)
    assert b == pytest.approx(3.0)
    assert spare_cores(b, ncpu=4) == 1


def test_guest_time_is_not_counted_twice(tmp_path: Path) -> None:
    # guest time is inside user already: +100 user of which 100 guest, +100 idle → one core of two
    b = _two_reads(tmp_path, _A, "cpu  1100 0 200 5100 50 0 10 0 100 0\n", ncpu=2)
    assert b == pytest.approx(1.0)


def test_a_whiff_of_load_leaves_the_core_and_never_below_one(tmp_path: Path) -> None:
    assert spare_cores(0.2, ncpu=2) == 2  # a shell and the kernel's threads
    assert spare_cores(0.3, ncpu=2) == 1
    assert spare_cores(7.5, ncpu=2) == 1  # never zero threads
    assert spare_cores(None, ncpu=8) == 8  # unknown: all of them


@pytest.mark.parametrize(
    "first,second",
    [
        ("", "cpu 1 2 3 4\n"),  # empty file
        ("intr 1 2 3\n", "intr 4 5 6\n"),  # no cpu line first
        ("cpu  a b c d\n", "cpu  1 2 3 4\n"),  # garbage
        (_A, _A),  # no time passed: no division by zero
        (_A, None),  # the file went away
    ],
)
def test_unreadable_stat_is_unknown(tmp_path: Path, first: str, second: str | None) -> None:
    assert _two_reads(tmp_path, first, second, ncpu=2) is None


def test_asked_threads_are_kept() -> None:
    assert quality_threads(3, sample_s=0.0) == 3


def test_a_real_busy_neighbour_is_seen() -> None:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        b = busy_cores(1.0)
    finally:
        hog.kill()
        hog.wait()
    assert b is not None and b >= 0.7, b


def test_the_sweep_says_when_its_threads_exceed_the_spare_cores(capsys: pytest.CaptureFixture[str]) -> None:
    import os

    from edgebench.cli._sweep import busy_notice

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy_notice(os.cpu_count() or 1)  # every core asked for, one of them taken
    finally:
        hog.kill()
        hog.wait()
    err = capsys.readouterr().err
    assert "host busy: other processes keep" in err and "will measure that load" in err
