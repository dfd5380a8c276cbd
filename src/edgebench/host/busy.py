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
from collections.abc import Callable
from pathlib import Path

__all__ = ["busy_cores", "quality_threads", "spare_cores"]

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice; guest time
# is already inside user/nice, so it is not added again
_IDLE = (3, 4)
_COUNTED = 8


def _read(path: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies of the aggregate cpu line, or None where there is no /proc/stat."""
    try:
        with path.open() as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    try:
        vals = [int(v) for v in first[1 : 1 + _COUNTED]]
    except ValueError:
        return None
    total = sum(vals)
    idle = sum(vals[i] for i in _IDLE if i < len(vals))
    return total - idle, total


def busy_cores(
    sample_s: float = 0.25,
    stat: Path = Path("/proc/stat"),
    ncpu: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """Cores busy over `sample_s` (we sleep meanwhile, so it is everybody else); None if unknown."""
    n = ncpu or os.cpu_count() or 1
    a = _read(stat)
    sleep(sample_s)
    b = _read(stat)
    if a is None or b is None or b[1] <= a[1]:
        return None
    return n * (b[0] - a[0]) / (b[1] - a[1])


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
