"""Busy cores from /proc/stat: recorded stat lines (fake files rewritten between the two reads) and
one real busy neighbour."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgebench.host.busy import busy_cores, contended, others_cores, quality_threads, spare_cores, window

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


# --- over a measured process: everything busy minus the process's own CPU time

_PERCPU = (
    "cpu  3000 0 0 3000 0 0 0 0 0 0\n"
    "cpu0 1000 0 0 1000 0 0 0 0 0 0\n"
    "cpu1 1000 0 0 1000 0 0 0 0 0 0\n"
    "cpu2 1000 0 0 1000 0 0 0 0 0 0\n"
    "intr 12345\n"
)


def _stat(busy: tuple[int, int, int], idle: tuple[int, int, int]) -> str:
    cpus = "".join(
        f"cpu{i} {b} 0 0 {d} 0 0 0 0 0 0\n" for i, (b, d) in enumerate(zip(busy, idle, strict=True))
    )
    return f"cpu  {sum(busy)} 0 0 {sum(idle)} 0 0 0 0 0 0\n{cpus}intr 12345\n"


def test_others_are_the_busy_time_the_process_did_not_use(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(_PERCPU)
    t = iter([10.0, 12.0])  # a 2 s process
    w = window(None, stat, now=lambda: next(t))
    # over 2 s on 3 cores (600 jiffies): cpu0 and cpu1 fully busy, cpu2 idle
    stat.write_text(_stat((1200, 1200, 1000), (1000, 1000, 1200)))
    # the process itself used 2 CPU s (one core): the other busy core is someone else's
    o = others_cores(w, own_cpu_s=2.0, stat=stat, now=lambda: next(t))
    assert o == pytest.approx(1.0)
    assert contended(o, threads=3, ncpu=3) and not contended(o, threads=2, ncpu=3)


def test_pinned_cpus_read_only_their_lines(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(_PERCPU)
    t = iter([0.0, 2.0])
    w = window([1, 2], stat, now=lambda: next(t))  # the big cores, say
    stat.write_text(_stat((1200, 1200, 1000), (1000, 1000, 1200)))
    # on cpu1+cpu2: one core busy over the window, and the process used 2 CPU s: nobody else there
    assert others_cores(w, own_cpu_s=2.0, stat=stat, now=lambda: next(t)) == pytest.approx(0.0)
    w = window([5], stat)  # a CPU that is not there (offline): unknown, never a guess
    assert w.jiffies is None and others_cores(w, 1.0, stat) is None


def test_a_busy_neighbour_flags_the_points_rows(tmp_path: Path) -> None:
    """A real spin loop beside a fake llama-bench at every core: its processes are contended."""
    from edgebench.host.probe import probe_host
    from edgebench.measure.space import CpuSet, Point
    from edgebench.measure.throughput import MeasureSettings, PointMeasurer
    from edgebench.models.gguf import read_model_info
    from edgebench.runtime.flags import BenchTest
    from edgebench.store import Store
    from edgebench.testing.synth import write_tiny_llama
    from fake_llama import fake_bin_dir, fake_runtime
    from test_race import fake_drifting_bench

    bench = fake_drifting_bench(tmp_path / "calls", "100.0", "1.0")
    rt = fake_runtime(fake_bin_dir(tmp_path / "bin", bench))
    info = read_model_info(write_tiny_llama(tmp_path / "m.gguf", n_layer=2))
    m = PointMeasurer(Store(tmp_path / "s.sqlite"), rt, probe_host(), info, MeasureSettings(timeout_s=60))
    n = os.cpu_count() or 1
    point = Point(threads=n, kv="f16", fa="on", ubatch=512, cpus=CpuSet(name="all", cpus=None))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        r = m.measure(point, BenchTest(n_prompt=0, n_gen=16))
    finally:
        hog.kill()
        hog.wait()
    assert r.ok and r.contended, (r.status, r.cause, [g.others_cores for g in r.gates])
    assert all(g.others_cores is not None and g.others_cores >= 0.5 for g in r.gates)


def test_a_processs_own_cpu_time_comes_from_the_kernel() -> None:
    from edgebench.runtime import proc

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    res = proc.run([sys.executable, "-c", spin], timeout_s=60)
    assert res.ok and 0.3 <= res.cpu_s < res.wall_s + 0.05
    idle = proc.run([sys.executable, "-c", "import time; time.sleep(0.4)"], timeout_s=60)
    assert idle.ok and idle.cpu_s < 0.2 and idle.wall_s >= 0.4  # waiting is not CPU
