"""How many cores other processes keep busy right now, from two reads of /proc/stat.

Why it matters: ggml's worker threads spin at every barrier, so llama.cpp at as many threads as
cores collapses beside one busy process — measured here, gemma-3-270m tg32 × 3 beside `stress-ng
--cpu 1` on 2 cores: 2 threads not done in 120 s, 1 thread 2.4 s. Measurements whose result does
not depend on the thread count (KLD, perplexity, an importance matrix) take the spare cores; speed
measurements keep their threads and are told the host is busy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Window", "busy_cores", "contended", "others_cores", "quality_threads", "spare_cores", "window"]

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice; guest time
# is already inside user/nice, so it is not added again
_IDLE = (3, 4)
_COUNTED = 8


def _jiffies(fields: list[str]) -> tuple[int, int]:
    vals = [int(v) for v in fields[1 : 1 + _COUNTED]]
    total = sum(vals)
    return total - sum(vals[i] for i in _IDLE if i < len(vals)), total


def _read(path: Path, cpus: Iterable[int] | None = None) -> tuple[int, int, int] | None:
    """(busy, total) jiffies and the CPU count, of the aggregate cpu line — or summed over the
    `cpus` lines — or None where there is no readable /proc/stat."""
    try:
        with path.open() as f:
            lines = [ln.split() for ln in f if ln.startswith("cpu")]
    except OSError:
        return None
    per_cpu = [fs for fs in lines if fs and fs[0][3:].isdigit()]
    try:
        if cpus is None:
            first = lines[0] if lines else []
            if not first or first[0] != "cpu":
                return None
            return (*_jiffies(first), len(per_cpu) or os.cpu_count() or 1)
        want = {f"cpu{c}" for c in cpus}
        got = [_jiffies(fs) for fs in per_cpu if fs[0] in want]
    except ValueError:
        return None
    if len(got) != len(want):
        return None  # a CPU the config names is not there (offline)
    return sum(b for b, _ in got), sum(t for _, t in got), len(got)


def busy_cores(
    sample_s: float = 0.25,
    stat: Path = Path("/proc/stat"),
    ncpu: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """Cores busy over `sample_s` (we sleep meanwhile, so it is everybody else); None if unknown."""
    a = _read(stat)
    sleep(sample_s)
    b = _read(stat)
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (ncpu or b[2]) * (b[0] - a[0]) / (b[1] - a[1])


@dataclass(frozen=True)
class Window:
    """/proc/stat at the start of a measured process, for `others_cores` at its end."""

    jiffies: tuple[int, int, int] | None  # busy, total, CPUs
    cpus: tuple[int, ...] | None
    t0: float


def window(
    cpus: Iterable[int] | None = None,
    stat: Path = Path("/proc/stat"),
    now: Callable[[], float] = time.monotonic,
) -> Window:
    cs = tuple(cpus) if cpus is not None else None
    return Window(_read(stat, cs), cs, now())


def others_cores(
    w: Window, own_cpu_s: float, stat: Path = Path("/proc/stat"), now: Callable[[], float] = time.monotonic
) -> float | None:
    """Cores kept busy by everything but the measured process over the window (on its CPUs when
    pinned): all busy time minus the process's own CPU time (the kernel's, from wait4). Costs two
    reads of /proc/stat, nothing while the process runs."""
    end = _read(stat, w.cpus)
    wall = now() - w.t0
    if w.jiffies is None or end is None or end[1] <= w.jiffies[1] or wall <= 0:
        return None
    busy = end[2] * (end[0] - w.jiffies[0]) / (end[1] - w.jiffies[1])
    return max(0.0, busy - own_cpu_s / wall)


def contended(others: float | None, threads: int, ncpu: int) -> bool:
    """Other processes held cores the measured threads needed (spinning ggml threads then wait
    for a descheduled one at every barrier)."""
    return others is not None and others > ncpu - threads + 0.25


def spare_cores(busy: float | None, ncpu: int | None = None) -> int:
    """Cores left for us: a core counts as taken once it is busier than a quarter (a shell, a
    sampler and the kernel's own threads leave a few percent behind)."""
    n = ncpu or os.cpu_count() or 1
    if busy is None:
        return n
    return max(1, n - max(0, math.ceil(busy - 0.25)))


def quality_threads(requested: int | None, *, sample_s: float = 0.25) -> int:
    """Threads for a measurement whose result does not depend on them: what was asked, else the
    spare cores."""
    if requested is not None:
        return requested
    return spare_cores(busy_cores(sample_s))
