"""bench/pipeline: wall time of `edgebench run` on the default models, llama.cpp already built.

Goal: ≤ 10 minutes on a 2-core machine. Prints where the time went (the run's own stage timings).
Usage: python bench/pipeline.py   (uses a fresh throwaway EDGEBENCH_HOME, so nothing is resumed)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> None:
    home = tempfile.mkdtemp(prefix="edgebench-pipeline-")
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "edgebench", "run", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGEBENCH_HOME": home},
        check=False,
        cwd=home,
    )
    wall = time.monotonic() - t0
    if res.returncode != 0:
        print(res.stderr[-2000:])
        raise SystemExit(f"edgebench run failed with exit code {res.returncode}")
    doc = json.loads(res.stdout)
    names = ", ".join(m["name"] for m in doc["models"])
    print(f"edgebench run on {len(doc['models'])} default models ({names})")
    for stage, secs in doc["timings_s"].items():
        print(f"  {stage:14} {secs:7.1f} s  {100 * secs / wall:5.1f} %")
    print(f"  {'total (wall)':14} {wall:7.1f} s")
    print(f"goal ≤ 600 s: {'PASS' if wall <= 600 else 'FAIL'}; report {doc['report']['html']}")


if __name__ == "__main__":
    main()
