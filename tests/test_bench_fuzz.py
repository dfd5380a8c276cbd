"""Fuzz: what a broken or hostile llama-bench prints or does, through the real measuring path.

Every case is a fake llama-bench (a /bin/sh script in tmp_path) measured by `PointMeasurer` — the
same code `edgebench sweep` runs — and the contract is the one issue 10 asks for: no internal
error, no hang, every case a stored row with a non-ok status and a one-line cause free of control
characters, and every stored record valid JSON (no NaN). One more case goes through the CLI.
The cases are generated deterministically (no randomness between runs).
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgebench.host.probe import probe_host
from edgebench.measure.space import CpuSet, Point
from edgebench.measure.throughput import MeasureSettings, PointMeasurer
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import BenchTest
from edgebench.store import Store
from edgebench.testing.synth import write_tiny_llama
from fake_llama import bench_row, fake_bin_dir, fake_runtime, python_script
from helpers import FIXTURES

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
TEST = BenchTest(n_prompt=16, n_gen=0, depth=0, reps=2)
# The hang cases cost their timeout; the others get a long one, so a loaded machine cannot turn
# "invalid output" into "timeout".
HANG_TIMEOUT_S = 2.0
TIMEOUT_S = 30.0
CAT = 'cat "$OUT"'


class Case:
    def __init__(
        self,
        name: str,
        out: bytes = b"",
        sh: str = CAT,
        expect: str | None = "invalid-output",
        *,
        hangs: bool = False,  # some process of the case hangs: measured with the short timeout
    ) -> None:
        self.name, self.out, self.sh, self.expect = name, out, sh, expect
        self.hangs = hangs or expect == "timeout"


def _json(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _row_with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    row = bench_row()
    target: Any = row
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return row


def _raw_row_with(path: tuple[Any, ...], token: str) -> bytes:
    # A JSON token Python's json would not write (NaN, 1e400, a 5000-digit integer).
    marker = "__FUZZ__"
    return _json([_row_with(path, marker)]).replace(f'"{marker}"'.encode(), token.encode())


def cases() -> list[Case]:
    out: list[Case] = []
    fields: list[tuple[Any, ...]] = [
        ("avg_ts",),
        ("stddev_ts",),
        ("samples_ts", 0),
        ("samples_ts", 1),
        ("n_prompt",),
        ("n_gen",),
        ("n_depth",),
        ("model_size",),
        ("samples_ns", 0),
    ]
    # Non-finite and overflowing numbers anywhere in the row (the record would not be JSON).
    for f in fields:
        for token in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
            out.append(Case(f"{'.'.join(map(str, f))}={token}", _raw_row_with(f, token)))
    # Rates that are not rates: zero, negative, absurd.
    for f in (("avg_ts",), ("samples_ts", 0), ("samples_ts", 1)):
        for v in (0, 0.0, -1.0, -1e-9, -1e300, 1e12, 1e300):
            out.append(Case(f"{'.'.join(map(str, f))}={v}", _json([_row_with(f, v)])))
    out.append(Case("stddev_ts=-1", _json([_row_with(("stddev_ts",), -1.0)])))
    # Huge integers: another test, or beyond what Python converts.
    out.append(Case("n_prompt=10**30", _json([_row_with(("n_prompt",), 10**30)])))
    out.append(Case("n_prompt=5000 digits", _raw_row_with(("n_prompt",), "9" * 5000)))
    out.append(Case("avg_ts=5000 digits", _raw_row_with(("avg_ts",), "9" * 5000)))
    # Strings, booleans, nulls, objects for numbers.
    for f in (("avg_ts",), ("stddev_ts",), ("n_prompt",), ("n_gen",), ("n_depth",), ("samples_ts", 0)):
        for v in ("100", "", "NaN", True, None, {"v": 1}):
            out.append(Case(f"{'.'.join(map(str, f))}={v!r}", _json([_row_with(f, v)])))
    out.append(Case("model_size='big'", _json([_row_with(("model_size",), "big")])))
    out.append(Case("samples_ts='100,101'", _json([_row_with(("samples_ts",), "100,101")])))
    out.append(Case("samples_ts=100", _json([_row_with(("samples_ts",), 100.0)])))
    out.append(Case("samples_ts=[[100],[101]]", _json([_row_with(("samples_ts",), [[100.0], [101.0]])])))
    # Missing keys (n_depth may be missing: older llama-bench builds do not print it).
    for key in ("n_prompt", "n_gen", "avg_ts", "stddev_ts", "samples_ts"):
        row = bench_row()
        del row[key]
        out.append(Case(f"missing {key}", _json([row])))
    # Sample counts that do not match -r.
    for samples in ([], [100.0], [100.0, 101.0, 102.0], [100.0] * 50):
        out.append(Case(f"{len(samples)} samples", _json([bench_row(samples=samples)])))
    # A row for another test than the one asked for.
    for n_prompt, n_gen, depth in (
        (512, 0, 0),
        (0, 16, 0),
        (16, 16, 0),
        (16, 0, 4096),
        (0, 0, 0),
        (-16, 0, 0),
    ):
        out.append(Case(f"test p{n_prompt} n{n_gen} d{depth}", _json([bench_row(n_prompt, n_gen, depth)])))
    # Shapes: not a list, empty, extra rows, rows that are not objects, nesting.
    good = bench_row()
    for name, doc in (
        ("object", good),
        ("string", "pp16"),
        ("number", 100),
        ("null", None),
        ("empty list", []),
        ("two rows", [good, good]),
        ("extra other row", [good, bench_row(n_prompt=512)]),
        ("row is list", [[good]]),
        ("row is number", [1]),
        ("row is null", [None]),
        ("row is string", ["pp16"]),
    ):
        out.append(Case(f"shape {name}", _json(doc)))
    out.append(Case("nesting 100000", b"[" * 100_000 + b"]" * 100_000))
    out.append(Case("nesting 100000 unclosed", b"[" * 100_000))
    out.append(Case("nesting in a row", _json([_row_with(("cpu_info",), json.loads("[" * 50 + "]" * 50))])))
    out.append(Case("nesting 800 in a row", _raw_row_with(("backends",), "[" * 800 + "]" * 800)))
    # Truncated and padded JSON.
    text = _json([good])
    for cut in (1, 2, 10, len(text) // 3, len(text) // 2, len(text) - 2, len(text) - 1):
        out.append(Case(f"truncated at {cut}", text[:cut]))
    out.append(Case("trailing garbage", text + b" }{ garbage"))
    out.append(Case("two arrays", text + text))
    out.append(Case("empty output", b""))
    out.append(Case("whitespace", b" \n\t\r\n"))
    out.append(Case("markdown table", b"| model | size | params | backend | threads | test | t/s |\n"))
    out.append(Case("ansi around json", b"\x1b[31m" + text + b"\x1b[0m"))
    out.append(Case("nul inside json", text[:20] + b"\x00" + text[20:]))
    out.append(Case("utf-16 json", json.dumps([good]).encode("utf-16")))
    rng = random.Random(10)
    for i in range(8):
        garbage = bytes(rng.randrange(256) for _ in range(rng.choice((16, 300, 5000))))
        out.append(Case(f"binary garbage {i}", garbage))
        out.append(Case(f"binary after bracket {i}", b"[" + garbage))
    # Mutations of a valid row: one byte flipped at a deterministic place.
    for i in range(20):
        pos = rng.randrange(len(text))
        mutated = text[:pos] + bytes([rng.randrange(256)]) + text[pos + 1 :]
        try:  # as edgebench reads it: UTF-8 with replacement
            json.loads(mutated.decode("utf-8", "replace"))
            continue  # still valid JSON (a digit or a letter changed): not a fuzz case of this kind
        except ValueError:
            out.append(Case(f"flipped byte {i} at {pos}", mutated))
    # What the process does: exit codes, signals, hangs, grandchildren holding the pipes.
    noisy = "printf '\\033[31merror: \\033[2J\\001boom\\033[0m\\r\\n' >&2"
    for code in (1, 2, 3, 127, 134, 255):
        out.append(Case(f"exit {code}", sh=f"{noisy}; exit {code}", expect=None))
        out.append(Case(f"valid json, exit {code}", out=text, sh=f"{CAT}; exit {code}", expect=None))
    for sig in ("SEGV", "ABRT", "KILL", "TERM", "BUS", "ILL", "FPE"):
        out.append(Case(f"signal {sig}", out=text, sh=f"{CAT}; {noisy}; kill -{sig} $$", expect=None))
    gdb = (
        "printf '%s\\n' 'ggml.c:1742: GGML_ASSERT(ggml_can_repeat(b, a)) failed' "
        "'[Inferior 1 (process 1) detached]' '../csu/libc-start.c: No such file or directory.' >&2"
    )
    out.append(Case("abort with gdb noise", sh=f"{gdb}; kill -ABRT $$", expect="crashed"))
    out.append(Case("binary stderr, exit 1", out=bytes(range(256)), sh='cat "$OUT" >&2; exit 1', expect=None))
    out.append(Case("hang", sh="sleep 30", expect="timeout"))
    out.append(Case("hang after output", out=text, sh=f"{CAT}; sleep 30", expect="timeout"))
    out.append(Case("hang with closed pipes", sh="exec >&- 2>&-; sleep 30", expect="timeout"))
    # The leader exits at once: not waiting for the grandchild, this is invalid output within
    # seconds, not a timeout after TIMEOUT_S.
    out.append(Case("grandchild holds pipes", out=text[:10], sh=f"sleep 30 & {CAT}"))
    out.append(Case("grandchild holds pipes, leader hangs", sh="sleep 30 & sleep 30", expect="timeout"))
    out.append(Case("grandchild ignores TERM", sh="(trap '' TERM; sleep 30) & sleep 30", expect="timeout"))
    out.append(Case("big garbage", out=b"x" * (4 << 20)))
    # Fails, then hangs in the -v re-run that asks llama.cpp why: bounded by the same timeout.
    hang_on_v = 'case "$*" in *" -v"*) sleep 30;; esac; echo "error: no" >&2; exit 1'
    out.append(Case("failure whose diagnosis hangs", sh=hang_on_v, expect="failed", hangs=True))
    return out


CASES = cases()


def _strict_json(text: str) -> Any:
    def refuse(const: str) -> Any:
        raise ValueError(f"not JSON: {const}")

    return json.loads(text, parse_constant=refuse)


def test_fuzz_cases_are_many_and_distinct() -> None:
    assert len(CASES) >= 200
    assert len({c.name for c in CASES}) == len(CASES)


def test_valid_output_is_ok_through_the_same_path(tmp_path: Path) -> None:
    # The control: the fakes' format is what edgebench reads, so the failures below are the fuzz's.
    store = Store(tmp_path / "s.sqlite")
    m = _measurer(store, tmp_path, "valid", Case("valid", _json([bench_row()])), tmp_path / "tiny.gguf")
    res = m.measure(_POINT, TEST)
    assert res.status == "ok" and res.mean_ts is not None, res.cause


_POINT = Point(threads=1, kv="f16", fa="off", ubatch=512, cpus=CpuSet(name="all", cpus=None))


def _measurer(store: Store, root: Path, tag: str, case: Case, model_path: Path) -> PointMeasurer:
    if not model_path.exists():
        write_tiny_llama(model_path)
    rt = fake_runtime(fake_bin_dir(root / tag, case.sh, stdout=case.out), build_id=f"fake-{tag}")
    host = probe_host(FIXTURES / "sysfs" / "rpi5")
    timeout = HANG_TIMEOUT_S if case.hangs else TIMEOUT_S
    settings = MeasureSettings(timeout_s=timeout, min_processes=3, reps_per_process=2)
    return PointMeasurer(
        store, rt, host, read_model_info(model_path), settings, sysroot=FIXTURES / "sysfs" / "rpi5"
    )


def test_fuzz_bench_outputs_through_the_measurer(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    model = tmp_path / "tiny.gguf"
    problems: list[str] = []
    t0 = time.monotonic()
    for i, case in enumerate(CASES):
        t_case = time.monotonic()
        try:
            res = _measurer(store, tmp_path, str(i), case, model).measure(_POINT, TEST)
        except Exception as exc:  # an internal error: the sweep would have stopped here
            problems.append(f"{case.name}: raised {type(exc).__name__}: {exc}"[:300])
            continue
        if case.hangs and time.monotonic() - t_case > 60:  # a few 2 s timeouts, not a hang
            problems.append(f"{case.name}: took {time.monotonic() - t_case:.0f} s")
        if res.status == "ok":
            problems.append(f"{case.name}: stored as ok")
        if case.expect is not None and res.status != case.expect:
            problems.append(f"{case.name}: status {res.status}, expected {case.expect} ({res.cause})")
        if not res.cause or CONTROL.search(res.cause):
            problems.append(f"{case.name}: cause {res.cause!r}")
        if case.expect == "invalid-output" and not res.cause.startswith("invalid output: "):
            problems.append(f"{case.name}: cause {res.cause!r}")
    elapsed = time.monotonic() - t0
    assert not problems, "\n".join(problems)
    records = [r[0] for r in sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT record FROM results")]
    assert len(records) == len(CASES)
    for rec in records:
        _strict_json(rec)
    # No hang: the hang cases cost a timeout each; everything else is a fraction of a second.
    assert elapsed < 300


_CYCLE = r"""
import json, os, sys
a = sys.argv[1:]
if "-p" not in a:
    sys.exit(0)
cnt = os.path.join(os.environ["FAKE_DIR"], "count")
n = int(open(cnt).read()) if os.path.exists(cnt) else 0
open(cnt, "w").write(str(n + 1))
g = lambda k: int(a[a.index(k) + 1])
row = {"n_prompt": g("-p"), "n_gen": g("-n"), "n_depth": g("-d"), "avg_ts": 1.0, "stddev_ts": 0.0,
       "samples_ts": [1.0] * g("-r")}
outs = [
    json.dumps([dict(row, avg_ts=float("nan"), samples_ts=[float("nan")] * g("-r"))]),
    json.dumps([dict(row, samples_ts=[])]),
    "[" * 100000 + "]" * 100000,
    json.dumps([dict(row, n_prompt=999)]),
    json.dumps([row]).replace('"avg_ts": 1.0', '"avg_ts": 1e400'),
]
sys.stdout.write(outs[n % len(outs)])
"""


def test_fuzz_through_the_cli_sweep(tmp_path: Path) -> None:
    bd = fake_bin_dir(tmp_path / "bin", python_script(_CYCLE))
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    conf = tmp_path / "edgebench.toml"
    conf.write_text(f'data_dir = "{tmp_path / "data"}"\n[llama_cpp]\nbin_dir = "{bd}"\n')
    env = {**os.environ, "EDGEBENCH_CONFIG": str(conf), "FAKE_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "edgebench", "sweep", str(model), "--threads", "1,2", "--kv", "f16"]
    argv += ["--fa", "off", "--search", "grid", "--no-server-check", "--timeout", "20", "-p", "16", "-n", "4"]
    r = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    _strict_json(r.stdout)
    store = Store(tmp_path / "data" / "edgebench.sqlite")
    rows = list(store.rows("throughput"))
    assert len(rows) == 4  # 2 thread counts × (pp, tg), each a row
    for row in rows:
        assert row.status == "invalid-output"
        assert row.record["cause"].startswith("invalid output: ")
    for (rec,) in sqlite3.connect(tmp_path / "data" / "edgebench.sqlite").execute(
        "SELECT record FROM results"
    ):
        _strict_json(rec)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name in ("nesting 100000", "hang", "grandchild holds pipes")]
)
def test_fuzz_samples_stand_alone(case: Case, tmp_path: Path) -> None:
    # A few of the cases above on their own, so a regression names its case in the test id.
    store = Store(tmp_path / "s.sqlite")
    t0 = time.monotonic()
    res = _measurer(store, tmp_path, "one", case, tmp_path / "tiny.gguf").measure(_POINT, TEST)
    assert res.status != "ok" and not CONTROL.search(res.cause)
    assert time.monotonic() - t0 < 30
