"""Is numpy a fair memory-bandwidth probe? Compare it with a STREAM-style C loop built right now.

    .venv/bin/python bench/bandwidth.py [--size-mib 64] [--repeats 10]

Both sides run single-threaded on 3 float64 arrays of --size-mib each (keep that well above the
last-level cache) and report the best of --repeats. Bytes are counted the STREAM way for every
kernel: 2 reads + 1 write = 24 bytes per element, whatever temporaries a kernel uses, so a kernel
with extra traffic shows up as slower instead of being flattered. The C arrays get the same
transparent-huge-page advice numpy gives its large allocations, so C is not handicapped by TLB misses.

Pass criterion (the issue's): numpy's triad, and edgebench's own measurement, reach >= 80 % of
the C triad. Exit status 0 on pass, 1 on fail, 2 when no C compiler is available.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edgebench.host.bandwidth import BYTES_PER_ELEMENT, bandwidth_method, measure_bandwidth

C_SOURCE = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double *alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 2u << 20, n * sizeof(double)) != 0) exit(3);
    madvise(p, n * sizeof(double), MADV_HUGEPAGE);  /* numpy does the same for big arrays */
    return p;
}

int main(int argc, char **argv) {
    size_t n = (size_t)atol(argv[1]) * 1024 * 1024 / sizeof(double);
    int repeats = atoi(argv[2]);
    double *restrict a = alloc(n), *restrict b = alloc(n), *restrict c = alloc(n);
    for (size_t i = 0; i < n; i++) { a[i] = 0.0; b[i] = 1.0; c[i] = 2.0; }  /* fault pages in */
    const double s = 3.0;
    double best_triad = 1e30, best_add = 1e30;
    for (int r = 0; r <= repeats; r++) {  /* r == 0 is a warm-up */
        double t0 = now();
        for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        double t1 = now();
        for (size_t i = 0; i < n; i++) a[i] = b[i] + c[i];
        double t2 = now();
        if (r > 0 && t1 - t0 < best_triad) best_triad = t1 - t0;
        if (r > 0 && t2 - t1 < best_add) best_add = t2 - t1;
    }
    double bytes = 24.0 * (double)n;
    printf("triad %.6f\nadd %.6f\ncheck %.1f\n", bytes / best_triad / 1e9, bytes / best_add / 1e9, a[n / 2]);
    return 0;
}
"""

# Block sizes (elements) for the chunked triad: the block's tmp must stay in L1/L2, but each
# block costs two ufunc calls of Python overhead, so too small a block is slow too.
CHUNKS = (16_384, 65_536, 262_144)

Vec = NDArray[np.float64]


def run_c(size_mib: int, repeats: int, cc: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="edgebench-stream-") as tmp:
        src, exe = Path(tmp) / "stream.c", Path(tmp) / "stream"
        src.write_text(C_SOURCE)
        subprocess.run([cc, "-O3", "-march=native", "-o", str(exe), str(src)], check=True)
        out = subprocess.run(
            [str(exe), str(size_mib), str(repeats)], check=True, capture_output=True, text=True
        )
    return {k: float(v) for k, v in (line.split() for line in out.stdout.splitlines())}


def best_gbs(kernel: Callable[[], None], n: int, repeats: int) -> float:
    kernel()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        kernel()
        best = min(best, time.perf_counter() - t0)
    return n * BYTES_PER_ELEMENT / best / 1e9


def run_numpy(size_mib: int, repeats: int) -> dict[str, float]:
    n = size_mib * 1024 * 1024 // 8
    a, b, c = np.full(n, 0.0), np.full(n, 1.0), np.full(n, 2.0)
    s = 3.0
    tmp = np.empty(n)

    def naive_triad() -> None:  # full-size tmp: 2 extra streams (write tmp, read it back)
        np.multiply(c, s, out=tmp)
        np.add(b, tmp, out=a)

    results = {"naive triad (full tmp)": best_gbs(naive_triad, n, repeats)}
    for chunk in CHUNKS:
        small = np.empty(chunk)
        # Views are made once, outside the timed region; the loop only runs the two ufuncs.
        blocks = [
            (a[i : i + chunk], b[i : i + chunk], c[i : i + chunk], small[: min(chunk, n - i)])
            for i in range(0, n, chunk)
        ]

        def chunked_triad(blocks: list[tuple[Vec, Vec, Vec, Vec]] = blocks) -> None:
            for av, bv, cv, tv in blocks:
                np.multiply(cv, s, out=tv)
                np.add(bv, tv, out=av)

        results[f"chunked triad ({chunk * 8 // 1024} KiB blocks)"] = best_gbs(chunked_triad, n, repeats)
    results["add"] = best_gbs(lambda: np.add(b, c, out=a), n, repeats)
    if not np.allclose(a[:16], 3.0):
        raise RuntimeError("numpy kernels produced wrong values")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=64, help="MiB per array (3 arrays)")
    parser.add_argument("--repeats", type=int, default=10, help="best of N")
    parser.add_argument("--cc", default="gcc")
    args = parser.parse_args()
    if shutil.which(args.cc) is None:
        print(f"bandwidth: no C compiler {args.cc!r} on PATH", file=sys.stderr)
        return 2

    c = run_c(args.size_mib, args.repeats, args.cc)
    py = run_numpy(args.size_mib, args.repeats)
    lib = measure_bandwidth(args.size_mib, args.repeats)
    best_triad_name = max((k for k in py if k.startswith("chunked")), key=py.__getitem__)

    print(f"single thread, 3 × {args.size_mib} MiB float64, best of {args.repeats}, 24 B/element counted")
    print(f"  {'C triad  a = b + s*c (gcc -O3 -march=native)':<52} {c['triad']:7.2f} GB/s")
    print(f"  {'C add    a = b + c':<52} {c['add']:7.2f} GB/s")
    for name, gbs in py.items():
        print(f"  {'numpy ' + name:<52} {gbs:7.2f} GB/s   {gbs / c['triad']:5.1%} of C triad")
    print(f"  {'edgebench measure_bandwidth (' + bandwidth_method(args.size_mib, args.repeats) + ')':<52}")
    print(f"  {'':<52} {lib:7.2f} GB/s   {lib / c['triad']:5.1%} of C triad, {lib / c['add']:5.1%} of C add")

    triad_ratio = py[best_triad_name] / c["triad"]
    lib_ratio = lib / c["triad"]
    print(f"ratio numpy/C triad: {triad_ratio:.2f} (best numpy triad: {best_triad_name})")
    print(f"ratio edgebench/C triad: {lib_ratio:.2f}")
    ok = triad_ratio >= 0.8 and lib_ratio >= 0.8
    print("PASS" if ok else "FAIL", "(need >= 0.80)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
