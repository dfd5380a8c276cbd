"""bench/latency_prediction: the gateway's predicted latency vs the measured one, on a mixed workload.

The serving spec starts with pp/tg measured here by llama-bench (as the sweep would store them) and
the gateway refits them from the requests it serves. Workload: short and long prompts, small and
large max_tokens (EOS ignored so max_tokens is what is generated), warm requests and cold ones (the
model unloaded before the request: its load time is in the prediction). Prints the median absolute
error of predicted vs measured (wall time at the client), overall, warm and cold.

Goal: median absolute error ≤ 20 %.
Usage: python bench/latency_prediction.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _common import setup
from _serve_common import run_gateway, spec_for

from edgebench.runtime import proc
from edgebench.runtime.flags import BenchTest, RuntimeConfig, bench_argv

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "a",
    "lighthouse",
    "keeper",
    "watches",
    "the",
    "storm",
]


def prompt(n_words: int) -> str:
    return " ".join(itertools.islice(itertools.cycle(WORDS), n_words))


def measured_speeds(runtime_bench: str, model_path: str, cfg: RuntimeConfig) -> tuple[float, float]:
    """pp512 and tg128 from llama-bench, as a sweep would store them for this config."""
    out = {}
    for t in (BenchTest(n_prompt=512, n_gen=0, reps=3), BenchTest(n_prompt=0, n_gen=128, reps=3)):
        argv = bench_argv(runtime_bench, model_path, cfg, t)
        r = proc.run(argv, timeout_s=600)
        rows = json.loads(r.stdout)
        out["pp" if t.n_prompt else "tg"] = float(rows[0]["avg_ts"])
    return out["pp"], out["tg"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runtime, host, model = setup()
    threads = max(1, len(host.big_cpus) or host.n_cpus)
    cfg = RuntimeConfig(threads=threads, ctx=4096)
    pp, tg = measured_speeds(runtime.binary("llama-bench"), model.path, cfg)
    spec = spec_for(model, cfg, pp_ts=pp, tg_ts=tg)
    print(f"model {model.name}, {threads} threads: llama-bench pp512 {pp:.1f} t/s, tg128 {tg:.1f} t/s")
    mixes = [(w, m) for w in (20, 600) for m in (16, 160)]  # (prompt words, max_tokens)
    errors: dict[str, list[float]] = {"warm": [], "cold": []}
    log_dir = Path(tempfile.mkdtemp(prefix="edgebench-lat-"))
    with run_gateway(spec, runtime, log_dir) as gw, httpx.Client(timeout=600) as c:
        for r in range(args.rounds):
            for i, (words, max_tokens) in enumerate(mixes):
                cold = (r + i) % 3 == 0
                if cold:
                    c.post(f"{gw.url}/admin/unload", json={"model": model.name}).raise_for_status()
                body = {
                    "model": model.name,
                    "prompt": prompt(words) + f" ({r}.{i})",  # never a prompt-cache hit
                    "max_tokens": max_tokens,
                    "ignore_eos": True,
                    "cache_prompt": False,
                }
                t0 = time.perf_counter()
                resp = c.post(f"{gw.url}/v1/completions", json=body)
                took = time.perf_counter() - t0
                resp.raise_for_status()
                predicted = float(resp.headers["x-edgebench-predicted-s"])
                err = (predicted - took) / took
                errors["cold" if cold else "warm"].append(abs(err))
                print(
                    f"  {'cold' if cold else 'warm'} prompt {words:4d} words, max_tokens {max_tokens:4d}: "
                    f"predicted {predicted:6.2f} s, measured {took:6.2f} s ({err * 100:+.0f} %)"
                )
        sp = gw.gateway.pool.slots[model.name].speed
        print(f"refitted: pp {sp.pp_ts:.1f} t/s, tg {sp.tg_ts:.1f} t/s, {sp.chars_per_token:.2f} chars/token")
    allerr = errors["warm"] + errors["cold"]
    warm, cold = (statistics.median(errors[k]) * 100 for k in ("warm", "cold"))
    print(
        f"median absolute error: {statistics.median(allerr) * 100:.1f} % over {len(allerr)} requests "
        f"(warm {warm:.1f} %, cold {cold:.1f} %; goal ≤ 20 %)"
    )


if __name__ == "__main__":
    main()
