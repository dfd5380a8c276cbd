"""bench/planner_accuracy: the memory planner's predictions vs what llama-server allocates and uses.

For gemma-3-270m and the synthetic zoo (edgebench.testing.zoo: dense n_ff = n_embd, gemma4 per-layer
head sizes with shared KV, gemma3 SWA, a MoE with repacked experts at the end of the file, a tied
Q4_0 embedding, K-quants, a jamba hybrid, qwen3 Q/K norms with a decoupled head size, smollm3,
mistral3, granite: 8 llama.cpp architectures) at ctx 4k/16k x KV f16/q8_0/q4_0 x flash attention
on/off: start llama-server (`-lv 4` so it prints its buffers), send one prompt filling `--fill` of
the context, stop it, parse its memory lines (edgebench.runtime.memlog) and compare with plan_memory:

- model, KV, compute: llama.cpp's own buffer sizes (goal: model/KV ≤ 2 %, compute ≤ 10 %);
- peak RSS vs the plan's host total (worst case: context full) and vs the plan at the fill the
  run reached (the compute buffer is reserved up front but only touched as the KV fills; goal ≤ 10 %).

The prompt is sent as text, sized from the tokens of one repetition (a prompt past the context is
refused). Context checkpoints stay on (llama-server's default: the plan counts the ones a long
prompt creates); the prompt cache is off (`--cache-ram 0`: it holds prompts of *finished* requests).
The repack rules follow this CPU's flags (HostInfo.cpu_flags), as the native build does.
llama-fit-params' own estimate (`-fitp on`) is shown beside it: it reserves logits for a full
ubatch (llama-server reserves one row per slot) and leaves the CPU_REPACK copy out of "Host".

Usage: python bench/planner_accuracy.py [--models gemma,dense-ffeq,…] [--ctx 4096,16384]
                                        [--kv f16,q8_0,q4_0] [--fa on,off] [--fill 0.9|N|full]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx

from edgebench.config import load_config
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.models.default import assemble_default_model
from edgebench.models.gguf import ModelInfo, read_model_info
from edgebench.models.memory import MemoryPlan, plan_memory
from edgebench.runtime.flags import FlashAttn, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.memlog import MemoryBreakdown, read_memory_log
from edgebench.runtime.server import ServerFailed, ServerProcess
from edgebench.setup import ensure_runtime
from edgebench.testing.synth import write_tiny_llama
from edgebench.testing.zoo import ZOO, write_zoo_model

FLAGS = tuple(probe_host().cpu_flags) or None

# issue 19's goals; RSS/total (the worst-case plan against a 90 % fill) is shown, not judged
GOALS = {"model": 2.0, "repack": 2.0, "KV": 2.0, "compute": 10.0, "RSS@fill": 10.0}
EXTRA = ("-lv", "4", "--cache-ram", "0")
WORDS = "the quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches "


@dataclass
class Row:
    model: str
    ctx: int
    kv: str
    fa: str
    errors: dict[str, float | None]
    rss: float | None
    fill: int | None
    fitp: str
    note: str = ""


def models(names: list[str], scratch: Path) -> dict[str, ModelInfo]:
    out: dict[str, ModelInfo] = {}
    for n in names:
        if n == "gemma":
            path = assemble_default_model(load_config().cache_dir / "models")
        elif n in ZOO:
            path = write_zoo_model(n, scratch)
        elif n == "tiny":  # the tests' tiny llama shape, with a 32k trained context
            path = write_tiny_llama(scratch / "tiny-llama-32k.gguf", ctx_train=32768)
        elif n == "mid":  # a wider synthetic llama: GQA 8:2, head dim 64, f16 weights
            path = write_tiny_llama(
                scratch / "mid-llama-32k.gguf",
                n_layer=4,
                n_embd=512,
                n_head=8,
                n_head_kv=2,
                n_ff=1536,
                ctx_train=32768,
                ftype="f16",
            )
        else:
            raise SystemExit(f"unknown model {n!r} (gemma, tiny, mid, {', '.join(ZOO)})")
        out[n] = read_model_info(path)
    return out


def pct(pred: float, meas: float | None) -> float | None:
    if meas is None or meas <= 0:
        return None
    return 100.0 * (pred - meas) / meas


def fit_params(rt: Runtime, m: ModelInfo, cfg: RuntimeConfig) -> tuple[str, float | None]:
    """llama-fit-params' own host estimate (model + context + compute, MiB), and its compute."""
    argv = [
        rt.binary("llama-fit-params"),
        "-m",
        m.path,
        "-c",
        str(cfg.ctx),
        "-ctk",
        cfg.cache_type_k,
        "-ctv",
        cfg.cache_type_v,
        "-fa",
        cfg.flash_attn,
        "-b",
        str(cfg.batch),
        "-ub",
        str(cfg.ubatch),
        "-t",
        str(cfg.threads),
        "-fitp",
        "on",
    ]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"n/a ({type(e).__name__})", None
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "Host" and all(p.isdigit() for p in parts[1:]):
            model_m, ctx_m, comp_m = (int(p) for p in parts[1:])
            return f"{model_m}+{ctx_m}+{comp_m}", float(comp_m)
    return "n/a (refused)" if out.returncode else "n/a", None


def run_one(rt: Runtime, name: str, m: ModelInfo, ctx: int, kv: str, fa: str, fill: str, tmp: Path) -> Row:
    cfg = RuntimeConfig(
        threads=2,
        ctx=ctx,
        cache_type_k=kv,
        cache_type_v=kv,
        flash_attn=cast(FlashAttn, fa),
        parallel=1,
        extra=EXTRA,
    )
    fitp_txt, fitp_compute = fit_params(rt, m, cfg)
    try:
        plan: MemoryPlan | None = plan_memory(m, cfg, cpu_flags=FLAGS)
    except ConfigError as e:
        plan, plan_err = None, str(e)
    log = tmp / f"{name}-{ctx}-{kv}-{fa}.log"
    if fill == "full":
        target = ctx - 16
    elif "." in fill:
        target = int(float(fill) * ctx)
    else:
        target = min(ctx - 16, int(fill))
    srv = ServerProcess(rt, m.path, cfg, log, ready_timeout_s=600)
    evaluated: int | None = None
    try:
        with srv:
            # plain text, as a client sends it: tokenizing the whole prompt through /tokenize first
            # would add its JSON (MiB for tens of thousands of tokens) to the server's RSS
            per_rep = len(srv.client.post("/tokenize", json={"content": WORDS}).json()["tokens"])
            prompt = WORDS * max(1, (target - 8) // max(1, per_rep))
            r = srv.client.post(
                "/completion",
                json={"prompt": prompt, "n_predict": 4, "cache_prompt": False, "temperature": 0},
            )
            r.raise_for_status()
            evaluated = int(r.json().get("tokens_evaluated", target)) + 4
            time.sleep(0.3)  # one more RSS sample after the last ubatch
    except httpx.TimeoutException:
        return Row(name, ctx, kv, fa, {}, srv.peak_rss_mib, None, fitp_txt, "fill timed out (busy host?)")
    except ServerFailed as e:
        agree = "agrees" if plan is None else "planner did NOT refuse"
        return Row(name, ctx, kv, fa, {}, None, None, fitp_txt, f"llama.cpp refused ({e.detail}); {agree}")
    if plan is None:
        return Row(
            name, ctx, kv, fa, {}, srv.peak_rss_mib, evaluated, fitp_txt, f"planner refused: {plan_err}"
        )
    b: MemoryBreakdown = read_memory_log(log)
    host = b.host
    at_fill = plan_memory(m, cfg, tokens_in_cache=evaluated, cpu_flags=FLAGS)
    errors = {
        "model": pct(plan.model_mib, host.model_mib if host else None),
        "repack": pct(plan.repack_mib, host.repack_mib if host else None),
        "KV": pct(plan.kv_mib, host.kv_mib if host else None),
        "compute": pct(plan.compute_mib, host.compute_mib if host else None),
        "RSS@fill": pct(at_fill.host_total_mib, srv.peak_rss_mib),
        "RSS/total": pct(plan.host_total_mib, srv.peak_rss_mib),
    }
    fit_plan = plan_memory(m, cfg, n_outputs=plan.n_ubatch, cpu_flags=FLAGS)  # what fit-params reserves
    note = ""
    if fitp_compute is not None:
        note = f"fit-params compute {fitp_compute:.0f} vs plan(n_out=ub) {fit_plan.compute_mib:.1f}"
    return Row(name, ctx, kv, fa, errors, srv.peak_rss_mib, evaluated, fitp_txt, note)


def fmt(v: float | None) -> str:
    return "    -  " if v is None else f"{v:+6.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="gemma," + ",".join(ZOO))
    ap.add_argument("--ctx", default="4096,16384")
    ap.add_argument("--kv", default="f16,q8_0,q4_0")
    ap.add_argument("--fa", default="on,off")
    ap.add_argument("--fill", default="0.9", help="prompt tokens per run, a fraction of ctx, or 'full'")
    args = ap.parse_args()
    if args.fill != "full" and not args.fill.replace(".", "", 1).isdigit():
        raise SystemExit("--fill: a token count, a fraction of the context or 'full'")

    rt = ensure_runtime(load_config())
    tmp = Path(tempfile.mkdtemp(prefix="edgebench-planner-"))
    ms = models(args.models.split(","), tmp)
    print(f"build {rt.build_id}; logs in {tmp}; fill {args.fill}\n")
    cols = list(GOALS)
    head = f"{'model':6} {'ctx':>6} {'kv':5} {'fa':3} " + " ".join(f"{c:>9}" for c in cols)
    print(head + f" {'RSS MiB':>8} {'fill':>6}  fit-params Host m+ctx+cmp")
    rows: list[Row] = []
    for name, m in ms.items():
        for ctx in (int(c) for c in args.ctx.split(",")):
            if ctx > m.ctx_train:
                continue
            for kv in args.kv.split(","):
                for fa in args.fa.split(","):
                    row = run_one(rt, name, m, ctx, kv, fa, args.fill, tmp)
                    rows.append(row)
                    errs = " ".join(f"{fmt(row.errors.get(c)):>9}" for c in cols)
                    rss = f"{row.rss:8.1f}" if row.rss else f"{'-':>8}"
                    fill_s = f"{row.fill:6d}" if row.fill else f"{'-':>6}"
                    print(f"{name:6} {ctx:6d} {kv:5} {fa:3} {errs} {rss} {fill_s}  {row.fitp}  {row.note}")

    print("\nmax |error| per model (%, over its runs):")
    print(f"  {'model':16} " + " ".join(f"{c:>9}" for c in cols) + "  runs")
    for name in ms:
        mine = [r for r in rows if r.model == name and r.errors]
        worst = []
        for c in cols:
            vals = [abs(v) for r in mine if (v := r.errors.get(c)) is not None]
            over = c in GOALS and vals and max(vals) > GOALS[c]
            worst.append(f"{max(vals):8.2f}{'!' if over else ' '}" if vals else f"{'-':>9}")
        print(f"  {name:16} " + " ".join(worst) + f"  {len(mine)}")

    print("\nmax |error| per bucket:")
    for c in cols:
        vals = [abs(v) for r in rows if (v := r.errors.get(c)) is not None]
        if not vals:
            print(f"  {c:9}   no data")
            continue
        top = max(vals)
        if c not in GOALS:
            print(f"  {c:9} {top:6.2f}%  ({len(vals)} runs; the plan's worst case, not a goal)")
            continue
        verdict = "PASS" if top <= GOALS[c] else "FAIL"
        print(f"  {c:9} {top:6.2f}%  (goal ≤ {GOALS[c]:.0f} %, {len(vals)} runs)  {verdict}")
    print(
        "\nRSS/total compares peak RSS with the worst case (context full); at a partial fill the "
        "reserved-but-untouched compute buffer makes it over-predict. RSS@fill is the like-for-like check.\n"
        "llama-server runs as edgebench starts it, glibc's mmap threshold fixed (server.MALLOC_ENV):\n"
        "so the work buffers a fill outgrows without flash attention go back to the OS instead of staying\n"
        "resident (12-17 MiB at a 4k fill of the small zoo models, more on bigger ones)."
    )


if __name__ == "__main__":
    main()
