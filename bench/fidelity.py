"""bench/fidelity: edgebench's pp/tg vs a direct llama-bench run of the same config, as paired rounds.

Each round runs, per config and test, five processes back to back, alternating the two sides:
D E D E D (llama-bench first) in even rounds and E D E D E in odd ones. The unit is the round's ratio
mean(E) / mean(D), both sides centred on the middle process, so a steady drift cancels; the order's
flip gives each side every position equally often, so whatever belongs to a position (the first
process after another config's, the one after edgebench's store write) cancels over a pair of
rounds instead of landing on one side. The configs' order rotates from round to round for the same
reason. Beside it, the A/A ratio of the same round: the middle process against the mean of the two
at the ends (D2 / mean(D1, D3), or E2 / mean(E1, E3)), one side against itself on this machine (the
noise floor). Its shape is one process against two where the E/D is two against three, so with
independent process noise its CI is ~1.34× the E/D's (√(1.5 / 0.83)).
Processes of one repetition by default (`--reps`): on this host the process, not the repetition,
carries the noise (pp512 at 2 threads: between-process CV 6.0 %, within-process 2.0 %; tg128 3.2 %
and 2.2 %; 6 interleaved rounds), so 5 processes of 1 repetition tell more than 3 of 3 in the
same time. Both sides run the same -r.
Rounds go on for a config and test until its E/D CI is `--halfwidth` wide on each side (after
`--min-rounds`, an even number of rounds so both orders count alike) or `--rounds` is reached, or
until `--budget-min` minutes are spent (at the next round boundary with every count even). Each
stop looks at the CI's width or the clock only, never at where the CI lies, so it cannot steer the
verdict. `--resume raw.json --rounds 0` measures nothing and judges the rounds stored.
Two noise-free checks come with it: the parameters llama-bench's JSON echoes for edgebench's argv and
for the hand-typed one, field by field, and edgebench's own CPU over each E process (all it could
take from the llama-bench beside it).
On this host (a shared VM, process CV 7-12 %) ±1.2 % takes ~110 rounds a config and test, over three
hours: `--resume raw.json` goes on from a run that was stopped, with the rounds it stored (each round
is its own pair, so rounds from two sittings pool; the same build, model and host are required).
Goal: the paired E/D ratio's 95 % CI inside 0.97-1.03 for every config and test.
Usage: python bench/fidelity.py [--rounds 40] [--min-rounds 10] [--halfwidth 0.012] [--reps 1]
       [--budget-min M] [--only 0:pp,1:pp] [--out raw.json | --resume raw.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import time
from pathlib import Path

from _common import fresh_store, setup

import edgebench
from edgebench.measure.space import CpuSet, Point
from edgebench.measure.throughput import MeasureSettings, PointMeasurer
from edgebench.runtime.flags import BenchTest, bench_argv
from edgebench.runtime.locate import Runtime
from edgebench.stats import Summary, summarize

CONFIGS = [
    Point(threads=2, kv="f16", fa="on", ubatch=512, cpus=CpuSet(name="all", cpus=None)),
    Point(threads=1, kv="q8_0", fa="on", ubatch=512, cpus=CpuSet(name="all", cpus=None)),
    Point(threads=2, kv="q4_0", fa="on", ubatch=256, cpus=CpuSet(name="all", cpus=None)),
]
TESTS = [BenchTest(n_prompt=512, n_gen=0), BenchTest(n_prompt=0, n_gen=128)]


def direct(bench: str, model: str, p: Point, t: BenchTest, reps: int) -> float:
    ts = direct_row(bench, model, p, t, reps)["avg_ts"]
    assert isinstance(ts, (int, float)), ts
    return float(ts)


def direct_row(bench: str, model: str, p: Point, t: BenchTest, reps: int) -> dict[str, object]:
    """The command a user would type, written out by hand (not through runtime/flags.py).

    With `-ngl 0`, as edgebench runs a CPU host: llama-bench's default (-1, "all layers", even
    with no GPU in the build) measured 3.5 % slower at t1 pp512 on this host (4 alternating
    pairs: 264.5-269.8 vs 270.4-279.5 t/s), a config difference, not wrapper overhead."""
    argv = [
        bench,
        "-m",
        model,
        "-p",
        str(t.n_prompt),
        "-n",
        str(t.n_gen),
        "-r",
        str(reps),
        "-t",
        str(p.threads),
        "-ctk",
        p.kv,
        "-ctv",
        p.kv,
        "-fa",
        p.fa,
        "-ub",
        str(p.ubatch),
        "-ngl",
        "0",
        "-o",
        "json",
    ]
    return _row(argv)


def _row(argv: list[str]) -> dict[str, object]:
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900)
    row: dict[str, object] = json.loads(out.stdout[out.stdout.find("[") :])[0]
    return row


# What differs between two processes of one config whatever runs them: the results and the clock.
_RESULT_FIELDS = {"test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts", "samples_ns", "samples_ts"}


def param_check(runtime: Runtime, model: str) -> list[str]:
    """Noise-free half of the check: llama-bench's own JSON echoes every parameter it ran with, so
    edgebench's argv and the hand-typed one are compared field by field (a short pp16 test each)."""
    bench, quick = runtime.binaries["llama-bench"], BenchTest(n_prompt=16, n_gen=0, reps=1)
    lines = []
    for p in CONFIGS:
        d = direct_row(bench, model, p, quick, 1)
        e = _row(bench_argv(bench, model, p.runtime(), quick, runtime.dialect))
        diff = sorted(k for k in d.keys() | e.keys() if k not in _RESULT_FIELDS and d.get(k) != e.get(k))
        what = ", ".join(f"{k}: {d.get(k)!r} by hand, {e.get(k)!r} by edgebench" for k in diff)
        lines.append(f"{p.runtime().label()}: {what or 'the same parameters'}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40, help="at most this many rounds a config and test")
    ap.add_argument("--min-rounds", type=int, default=10)
    ap.add_argument("--halfwidth", type=float, default=0.012, help="stop once the E/D CI is ± this")
    ap.add_argument("--reps", type=int, default=1, help="repetitions a process, both sides")
    ap.add_argument(
        "--budget-min",
        type=float,
        default=None,
        help="stop at the first round boundary after this many minutes (every count even) and judge",
    )
    ap.add_argument(
        "--only", default=None, help="configs and tests, e.g. 1:pp or 0:pp,1:pp (config index 0-2)"
    )
    ap.add_argument("--out", default=None, help="write every process's t/s here as JSON")
    ap.add_argument("--resume", default=None, help="go on from this --out file, and write to it")
    args = ap.parse_args()
    reps = args.reps
    keys = [(ci, ti) for ci in range(len(CONFIGS)) for ti in range(len(TESTS))]
    if args.only:
        keys = [
            (int(c), 0 if kind == "pp" else 1)
            for c, _, kind in (o.partition(":") for o in args.only.split(","))
        ]
    runtime, host, model = setup()
    bench = runtime.binaries["llama-bench"]
    # one process of `reps` repetitions, exactly what the direct run does: this measures the wrapper
    settings = MeasureSettings(reps_per_process=reps, min_processes=1, max_reps=reps)
    print("llama-bench's JSON echo of both argvs (load_mode auto resolves to mmap on a CPU build):")
    for line in param_check(runtime, model.path):
        print(f"  {line}")
    own_cpu: list[float] = []  # edgebench's own CPU seconds over one E process, / its wall seconds
    ratio: dict[tuple[int, int], list[float]] = {k: [] for k in keys}
    aa: dict[tuple[int, int], list[float]] = {k: [] for k in keys}
    raw: dict[str, list[dict[str, list[float]]]] = {f"{ci}:{ti}": [] for ci, ti in keys}
    meta = {
        "build": runtime.build_id,
        "model_sha256": model.sha256,
        "host": host.fingerprint,
        "reps": reps,
        "measuring_code": _measuring_code(),
    }
    out = args.resume or args.out
    kept: dict[str, list[dict[str, list[float]]]] = {}  # stored rounds of what --only leaves out
    if args.resume:
        kept = _load(Path(args.resume), meta)
        raw = {k: kept.pop(k, []) for k in raw}
        for k in keys:
            for rnd in raw[f"{k[0]}:{k[1]}"]:
                ratio[k].append(_mean(rnd["E"]) / _mean(rnd["D"]))
                mid = rnd["E"] if len(rnd["E"]) == 3 else rnd["D"]
                aa[k].append(mid[1] / ((mid[0] + mid[2]) / 2))
    # each config and test goes on from its own count (an --only run may have left some behind)
    active = [k for k in keys if len(ratio[k]) < args.rounds and not _stops(ratio[k], args)]
    if args.resume:
        have = ", ".join(f"{k[0]}:{TESTS[k[1]].name} {len(ratio[k])}" for k in keys)
        print(f"resumed {args.resume} (rounds stored: {have}); still measuring {len(active)} of {len(keys)}")
    r = 0  # this sitting's rounds: only the configs' order rotates with it
    deadline = time.monotonic() + args.budget_min * 60 if args.budget_min is not None else None
    while active:
        for key in active[r % len(active) :] + active[: r % len(active)]:
            edge_first = len(ratio[key]) % 2 == 1
            p, t = CONFIGS[key[0]], TESTS[key[1]]
            ds: list[float] = []
            es: list[float] = []
            for i in range(5):
                if (i % 2 == 1) != edge_first:
                    u0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
                    m = PointMeasurer(fresh_store(), runtime, host, model, settings)
                    es.append(m.measure(p, t).mean_ts or 0.0)
                    u1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
                    own_cpu.append((u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime) / (w1 - w0))
                else:
                    ds.append(direct(bench, model.path, p, t, reps))
            ratio[key].append(_mean(es) / _mean(ds))
            mid = es if edge_first else ds  # the side with three processes: middle against ends
            aa[key].append(mid[1] / ((mid[0] + mid[2]) / 2))
            raw[f"{key[0]}:{key[1]}"].append({"D": ds, "E": es})
        r += 1
        if out:  # after whole rounds only, so a stopped run resumes on a round boundary
            Path(out).write_text(json.dumps({"meta": meta, "rounds": {**kept, **raw}}))
        active = [k for k in active if len(ratio[k]) < args.rounds and not _stops(ratio[k], args)]
        width = " ".join(
            f"{k[0]}:{TESTS[k[1]].name} n={len(ratio[k])} ±{_half(summarize(ratio[k])):.4f}" for k in keys
        )
        print(f"round {r} of this sitting done; E/D CI half-widths: {width}", flush=True)
        # the clock, like the width, knows nothing of where a CI lies: a budget cannot steer it
        spent = deadline is not None and time.monotonic() > deadline
        if spent and all(len(ratio[k]) % 2 == 0 for k in active):
            print(f"the {args.budget_min:g}-minute budget is spent: judging the rounds stored")
            break
    print(f"fidelity on {model.name}: {reps} rep(s) a process, build {runtime.build_id}")
    print(
        f"{'config':38} {'test':6} {'rounds':>6} {'paired E/D [95 % CI]':24}  {'A/A mid/ends [95 % CI]':24}"
    )
    inside = True
    for key in keys:
        ci, ti = key
        if not ratio[key]:  # a judge-only resume (--rounds 0) of a file without this config and test
            print(f"{CONFIGS[ci].runtime().label():38} {TESTS[ti].name:6} {0:6d} no rounds stored")
            inside = False
            continue
        rs, aas = summarize(ratio[key]), summarize(aa[key])
        ok = rs.ci_low >= 0.97 and rs.ci_high <= 1.03
        inside = inside and ok
        label = CONFIGS[ci].runtime().label()
        print(
            f"{label:38} {TESTS[ti].name:6} {rs.n:6d} {_fmt(rs):24}  {_fmt(aas):24}"
            f"{'' if ok else '  outside'}"
        )
    own = sorted(own_cpu)
    if own:  # none when a resume only judges (the stored rounds keep t/s, not edgebench's CPU)
        print(
            f"edgebench's own CPU over an E process (set-up, gate, sampler, store write; an upper bound"
            f" on what it takes from llama-bench): median {own[len(own) // 2]:.2%} of a core,"
            f" max {own[-1]:.2%}"
        )
    part = f" for {args.only} only, not the goal's six" if args.only else ""
    print(f"goal: every paired CI inside 0.97-1.03{part}: {'PASS' if inside else 'FAIL'}")


def _stops(ratios: list[float], args: argparse.Namespace) -> bool:
    """Width only, never where the CI lies; an even count so both orders weigh alike."""
    n = len(ratios)
    return n >= args.min_rounds and n % 2 == 0 and _half(summarize(ratios)) <= args.halfwidth


def _measuring_code() -> str:
    """A digest of the code that starts and reads E's processes (runtime/, measure/): rounds from
    before a change to it are another experiment (an environment variable proc.spawn added once
    cost E 3.5 %), and a resume must not pool them with new ones."""
    root = Path(edgebench.__file__).parent
    digest = hashlib.sha256()
    for f in sorted([*(root / "runtime").glob("*.py"), *(root / "measure").glob("*.py")]):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def _load(path: Path, meta: dict[str, object]) -> dict[str, list[dict[str, list[float]]]]:
    """The stored rounds, if they were measured with what this run measures."""
    try:
        stored = json.loads(path.read_text())
        stored_meta, rounds = stored["meta"], stored["rounds"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"fidelity: cannot resume from {path}: not a stored run ({exc})") from None
    if stored_meta != meta:
        raise SystemExit(f"fidelity: {path} was measured with {stored_meta}, this run is {meta}")
    return dict(rounds)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _half(s: Summary) -> float:
    return (s.ci_high - s.ci_low) / 2


def _fmt(s: Summary) -> str:
    return f"{s.mean:.4f} [{s.ci_low:.4f}, {s.ci_high:.4f}]"


if __name__ == "__main__":
    main()
