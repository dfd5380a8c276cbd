"""bench/gateway: the same llama-server direct vs through the gateway, interleaved, 1 and 8 streams.

The direct side talks to the very llama-server process the gateway started (same model, same
config, same slot count), so the only difference is the gateway in the path. The gateway runs as its
own process, as `edgebench serve` does (in this process it would share the GIL with the clients).
Per request, from the client: TTFT (first content chunk) and decode t/s (content chunks after the
first ÷ the time from the first to the last). Both sides alternate ABBA — request by request at 1
stream, round by round (8 concurrent requests) at 8 — and are compared pair by pair. Prints the
ratios (gateway ÷ direct) and the gateway's own CPU time.

Goals: decode t/s ratio ≥ 0.99 at 1 stream and ≥ 0.97 at 8; added TTFT p50 ≤ 5 ms.
With llama-server on every core (the default) each µs of gateway CPU is taken from its decode
threads; `--threads` below the core count shows the gateway on a core of its own, as on a board
whose llama-server runs on its big cores only.
Usage: python bench/gateway.py [--rounds 4] [--requests 4] [--max-tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _common import setup
from _serve_common import RunningProcess, run_gateway_process, spec_for

from edgebench.runtime.flags import RuntimeConfig
from edgebench.stats import paired_difference

PROMPT = "Write a short story about a lighthouse keeper and a storm. " * 4


RETRIES: dict[str, int] = {}  # requests re-sent after a dropped keep-alive connection, by URL


def one(client: httpx.Client, url: str, path: str, body: dict[str, object]) -> tuple[float, float]:
    """(ttft_s, decode t/s) of one streamed request, measured by the client. A pooled connection
    the server closed before any answer is retried once, as the openai client does; a stream cut
    after its head is an error, never retried."""
    t0 = time.perf_counter()
    stamps: list[float] = []
    req = client.build_request("POST", url + path, json=body)
    try:
        r = client.send(req, stream=True)
    except httpx.RemoteProtocolError:
        RETRIES[url] = RETRIES.get(url, 0) + 1  # the TTFT keeps the failed attempt: the user waited
        r = client.send(req, stream=True)
    try:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.read().decode(errors='replace')[:300]}")
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            doc = json.loads(line[6:])
            ch = (doc.get("choices") or [{}])[0]
            if ch.get("text") or (ch.get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
    finally:
        r.close()
    if len(stamps) < 3:
        raise RuntimeError(f"only {len(stamps)} tokens streamed")
    return stamps[0] - t0, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def batch(
    url: str, path: str, body: dict[str, object], streams: int, requests: int
) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        with httpx.Client(timeout=600) as c:
            for _ in range(requests):
                try:
                    out.append(one(c, url, path, body))
                except BaseException as exc:  # reported after the batch
                    errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def paired(gw: RunningProcess, direct_url: str, path: str, body: dict[str, object], n: int) -> None:
    """One stream: requests alternate direct/gateway one by one (ABBA), so each pair ran in the same
    second and the machine's drift cancels in the per-pair difference."""
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] = []
    cpu = wall = 0.0
    with httpx.Client(timeout=600) as c:
        for i in range(n):
            got: dict[str, tuple[float, float]] = {}
            for side in ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct"):
                c0, w0 = gw.cpu_s(), time.perf_counter()
                got[side] = one(c, direct_url if side == "direct" else gw.url, path, body)
                if side == "gateway":
                    cpu += gw.cpu_s() - c0
                    wall += time.perf_counter() - w0
            pairs.append((got["direct"], got["gateway"]))
    d_tg = statistics.mean(d[1] for d, _ in pairs)
    g_tg = statistics.mean(g[1] for _, g in pairs)
    tg = paired_difference([g[1] / d[1] for d, g in pairs], [1.0] * n)
    added = [(g[0] - d[0]) * 1000 for d, g in pairs]
    ci = paired_difference([g[0] * 1000 for _, g in pairs], [d[0] * 1000 for d, _ in pairs])
    print(
        f"1 stream, {n} request pairs: decode t/s gateway/direct = {g_tg / d_tg:.3f} ({g_tg:.1f} / "
        f"{d_tg:.1f}; per-pair ratio {1 + tg.mean:.3f} [{1 + tg.ci_low:.3f}, {1 + tg.ci_high:.3f}]; "
        f"goal ≥ 0.99); TTFT p50 {statistics.median(g[0] for _, g in pairs) * 1000:.1f} vs "
        f"{statistics.median(d[0] for d, _ in pairs) * 1000:.1f} ms, added per pair: p50 "
        f"{statistics.median(added):+.1f} ms, mean {ci.mean:+.1f} [{ci.ci_low:+.1f}, {ci.ci_high:+.1f}] "
        f"(goal p50 ≤ 5 ms); gateway CPU {cpu / n * 1000:.1f} ms a request, "
        f"{cpu / wall * 100:.1f} % of one core"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument(
        "--requests",
        type=int,
        default=4,
        help="per stream per round; 1 stream runs 2 × rounds × requests pairs",
    )
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="llama-server threads (default: every big core); fewer leave the gateway a core of its own",
    )
    args = ap.parse_args()
    _, host, model = setup()
    threads = args.threads or max(1, len(host.big_cpus) or host.n_cpus)
    cfg = RuntimeConfig(threads=threads, ctx=4096, parallel=8)  # 8 slots: the 8 streams run together
    spec = spec_for(model, cfg)
    path = "/v1/completions"
    body = {
        "model": model.name,
        "prompt": PROMPT,
        "max_tokens": args.max_tokens,
        "ignore_eos": True,
        "stream": True,
        "temperature": 0,
    }
    with run_gateway_process(spec, Path(tempfile.mkdtemp(prefix="edgebench-gw-"))) as gw:
        with httpx.Client() as c:
            c.post(f"{gw.url}/admin/load", json={"model": model.name}, timeout=600).raise_for_status()
            direct_url = c.get(f"{gw.url}/admin/running").json()["running"][0]["url"]
        batch(direct_url, path, body, 1, 2)  # warm-up: caches, first allocations
        batch(gw.url, path, body, 1, 2)
        print(f"model {model.name}, {threads} threads, {cfg.parallel} slots, max_tokens {args.max_tokens}")
        paired(gw, direct_url, path, body, 2 * args.rounds * args.requests)
        streams = 8
        # one request per stream per round, rounds alternating ABBA: each round's 8 concurrent
        # requests are compared with the other side's round next to it (per-round pairs), so the
        # machine's drift between minutes cancels as it does at 1 stream
        rounds: dict[str, list[list[tuple[float, float]]]] = {"direct": [], "gateway": []}
        cpu = wall = 0.0
        for r in range(2 * args.rounds * args.requests):
            for side in ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct"):
                url = direct_url if side == "direct" else gw.url
                c0, w0 = gw.cpu_s(), time.perf_counter()
                rounds[side].append(batch(url, path, body, streams, 1))
                if side == "gateway":
                    cpu += gw.cpu_s() - c0
                    wall += time.perf_counter() - w0
        d_tg = [statistics.mean(tg for _, tg in rnd) for rnd in rounds["direct"]]
        g_tg = [statistics.mean(tg for _, tg in rnd) for rnd in rounds["gateway"]]
        d_ttft = [statistics.median(t for t, _ in rnd) * 1000 for rnd in rounds["direct"]]
        g_ttft = [statistics.median(t for t, _ in rnd) * 1000 for rnd in rounds["gateway"]]
        ratio = paired_difference([g / d for d, g in zip(d_tg, g_tg, strict=True)], [1.0] * len(d_tg))
        added = paired_difference(g_ttft, d_ttft)
        n = sum(len(rnd) for rnd in rounds["gateway"])
        print(
            f"8 streams, {len(d_tg)} round pairs ({n} requests a side): decode t/s gateway/direct = "
            f"{statistics.mean(g_tg) / statistics.mean(d_tg):.3f} (per-round ratio {1 + ratio.mean:.3f} "
            f"[{1 + ratio.ci_low:.3f}, {1 + ratio.ci_high:.3f}]; goal ≥ 0.97); added TTFT per round: p50 "
            f"{statistics.median(g - d for d, g in zip(d_ttft, g_ttft, strict=True)):+.1f} ms, mean "
            f"{added.mean:+.1f} [{added.ci_low:+.1f}, {added.ci_high:+.1f}] (goal ≤ 5 ms); "
            f"gateway CPU {cpu / n * 1000:.1f} ms a request, {cpu / wall * 100:.1f} % of one core"
        )
        print(
            f"re-sent after a dropped keep-alive connection: direct {RETRIES.get(direct_url, 0)}, "
            f"gateway {RETRIES.get(gw.url, 0)}"
        )


if __name__ == "__main__":
    main()
