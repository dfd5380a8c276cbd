"""Single-thread memory bandwidth in the STREAM style, with numpy only.

Kernel: STREAM "add", ``a = b + c``. It is one ufunc call, so there is no Python overhead and no
temporary array: the bytes moved are exactly STREAM's 2 reads + 1 write per element. (A numpy
triad needs ``tmp = s*c`` first; over whole arrays that tmp adds 2 more streams.) Token generation
in llama.cpp is bound by streaming the weights, which is what this approximates.
bench/bandwidth.py checks the result against a gcc-compiled C loop.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edgebench.errors import ConfigError

__all__ = ["BYTES_PER_ELEMENT", "bandwidth_method", "measure_bandwidth"]

# STREAM convention: 8-byte reads of b and c plus an 8-byte write of a. Write-allocate traffic
# (reading a's line before it is written) is not counted, as in STREAM.
BYTES_PER_ELEMENT = 3 * 8


def bandwidth_method(size_mib: int = 64, repeats: int = 5) -> str:
    """Human-readable description of what measure_bandwidth(size_mib, repeats) measures."""
    return f"numpy add kernel, 3×{size_mib} MiB, best of {repeats}"


def measure_bandwidth(size_mib: int = 64, repeats: int = 5) -> float:
    """Best-of-`repeats` bandwidth in GB/s (1e9 bytes/s) of ``a = b + c`` on `size_mib` MiB float64 arrays.

    Use arrays far larger than the last-level cache (the default 3×64 MiB is), or the result
    measures the cache instead of DRAM.
    """
    if size_mib < 1:
        raise ConfigError(f"bandwidth size_mib: must be at least 1 (got {size_mib})")
    if repeats < 1:
        raise ConfigError(f"bandwidth repeats: must be at least 1 (got {repeats})")
    n = size_mib * 1024 * 1024 // 8
    # np.full writes every page, so page faults happen here and not inside the timed region.
    a = np.full(n, 0.0)
    b = np.full(n, 1.0)
    c = np.full(n, 2.0)
    np.add(b, c, out=a)  # warm-up: first call may pay for ufunc dispatch setup
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.add(b, c, out=a)
        best = min(best, time.perf_counter() - t0)
    return n * BYTES_PER_ELEMENT / best / 1e9
