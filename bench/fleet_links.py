"""bench/fleet_links: a model on one host vs split over two RPC workers at shaped links.

Two rpc-servers run in network namespaces (edgebench.testing.netns: veth pairs, rate by tc, latency
by tc netem where the kernel has it, else by edgebench.testing.linkproxy's delay relay), the head in
this namespace. For each link, llama-bench tg32 and pp128 in `--processes` separate processes
(the process is the unit of the interval), split 1:1 over the workers, beside the local figures.
Needs root and iproute2. Prints the table; rows are stored (stage rpc_bench) in a throwaway store.

Usage: python bench/fleet_links.py [--model PATH] [--processes 3]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from edgebench.config import load_config
from edgebench.fleet.measure import bench_split
from edgebench.fleet.worker import RpcWorker
from edgebench.host.probe import probe_host
from edgebench.models.default import assemble_default_model
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.setup import ensure_runtime
from edgebench.stats import summarize_groups
from edgebench.store import Store
from edgebench.testing.linkproxy import DelayProxy
from edgebench.testing.netns import Link, NetnsLab, netns_available

LINKS = (
    Link("gigabit LAN", "1gbit", 0.1),
    Link("fast ethernet", "100mbit", 0.5),
    Link("slow Wi-Fi", "50mbit", 2.0),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--processes", type=int, default=3)
    args = ap.parse_args()
    why = netns_available()
    if why:
        raise SystemExit(f"fleet_links: {why}")
    cfg0 = load_config()
    rt = ensure_runtime(cfg0)
    path = Path(args.model) if args.model else assemble_default_model(cfg0.cache_dir / "models")
    info = read_model_info(path)
    host = probe_host()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-links-"))
    st = Store(tmp / "db.sqlite")
    st.migrate()
    tests = (BenchTest(n_prompt=0, n_gen=32, reps=3), BenchTest(n_prompt=128, reps=3))

    def measure(cfg: RuntimeConfig, link: str) -> dict[str, str]:
        out = {}
        for t in tests:
            groups = []
            for _ in range(args.processes):
                row = bench_split(st, rt, host, info, cfg, t, link=link)
                if not row.ok:
                    return {t.name: f"failed: {row.cause}"}
                groups.append(row.samples_ts)
            s = summarize_groups(groups)
            out[t.name] = f"{s.mean:.1f} [{s.ci_low:.1f}, {s.ci_high:.1f}]"
        return out

    rows = [("local (one host)", "—", measure(RuntimeConfig(threads=2), "none"))]
    for link in LINKS:
        with NetnsLab(2) as lab, contextlib.ExitStack() as stack:
            how = lab.shape(link)
            ws = [
                stack.enter_context(
                    RpcWorker(rt, lab.addr(i), 50052, threads=1, expose=True, prefix=lab.prefix(i))
                )
                for i in range(2)
            ]
            eps = [w.endpoint for w in ws]
            if how != "netem" and link.delay_ms >= 0.5:
                eps = [
                    stack.enter_context(DelayProxy((w.host, w.port), delay_ms=link.delay_ms)).endpoint
                    for w in ws
                ]
                how = "tbf + delay relay"
            cfg = RuntimeConfig(threads=2, ngl=99, rpc=tuple(eps), tensor_split=(1, 1))
            rows.append((f"split 1:1 over 2 workers, {link.label()}", how, measure(cfg, link.label())))
    size = info.file_size / 2**20
    print(f"\n{info.name} ({size:.0f} MiB), t/s mean [95 % CI over {args.processes} processes]")
    print(f"| setup | link made by | {' | '.join(t.name for t in tests)} |")
    print("|---|---|" + "---:|" * len(tests))
    for name, how, res in rows:
        print(f"| {name} | {how} | {' | '.join(res.get(t.name, '—') for t in tests)} |")


if __name__ == "__main__":
    main()
