"""bench/gateway_cpu: the gateway's own CPU per relayed token, against a fake upstream (a clearly
named stand-in that streams llama-server-sized SSE chunks, `--gap` apart), so nothing else runs.

On a 2-core board the gateway's CPU is taken from llama.cpp's threads: at 25 tokens/s (40 ms a
token, 80 ms of CPU on 2 cores) each 0.4 ms the gateway spends per token costs about 0.5 % of decode
speed. Prints µs of gateway CPU per chunk and what that is at 10, 25 and 50 tokens/s.
Usage: python bench/gateway_cpu.py [--requests 20] [--chunks 200] [--gap 0.002]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _serve_common import run_gateway_process


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.002, help="seconds between upstream chunks")
    args = ap.parse_args()
    here = Path(__file__).parent
    up = subprocess.Popen(
        [sys.executable, str(here / "_fake_sse.py"), str(args.chunks), str(args.gap)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        url = f"http://127.0.0.1:{int(up.stdout.readline())}"
        with run_gateway_process(url, Path(tempfile.mkdtemp(prefix="edgebench-gwcpu-"))) as gw:
            body = {"model": "fake", "prompt": "x", "max_tokens": args.chunks, "stream": True}
            with httpx.Client(timeout=60) as c:
                for _ in range(2):  # warm-up: imports, first connections
                    with c.stream("POST", f"{gw.url}/v1/completions", json=body) as r:
                        for _ in r.iter_raw():
                            pass
                chunks, c0, w0 = 0, gw.cpu_s(), time.perf_counter()
                for _ in range(args.requests):
                    with c.stream("POST", f"{gw.url}/v1/completions", json=body) as r:
                        r.raise_for_status()
                        for line in r.iter_lines():
                            chunks += line.startswith("data: {")
                cpu, wall = gw.cpu_s() - c0, time.perf_counter() - w0
    finally:
        up.kill()
    per = cpu / chunks
    print(
        f"{args.requests} requests, {chunks} chunks in {wall:.1f} s: gateway CPU {per * 1e6:.0f} µs a "
        f"chunk ({cpu / args.requests * 1000:.1f} ms a request); at 10/25/50 tokens/s: "
        + ", ".join(f"{per * tps * 100:.1f} %" for tps in (10, 25, 50))
        + " of one core"
    )


if __name__ == "__main__":
    main()
