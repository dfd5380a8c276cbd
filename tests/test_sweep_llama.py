"""The sweep against the real llama.cpp build on the synthetic model: failures, resume, export."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgebench.runtime.bench import parse_bench_json
from edgebench.runtime.locate import Runtime
from helpers import edgebench

pytestmark = pytest.mark.llama

GRID = [
    "--threads",
    "1",
    "--kv",
    "f16,q8_0,q4_0",
    "--fa",
    "on,off",
    "-p",
    "32",
    "-n",
    "16",
    "--search",
    "grid",
    "--no-server-check",
]


def _rows(db: Path) -> list[tuple[str, str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as c:
        try:
            return list(c.execute("SELECT key, status, record FROM results WHERE stage='throughput'"))
        except sqlite3.OperationalError:
            return []


def test_grid_records_failures_and_exports(runtime: Runtime, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    r = edgebench("sweep", str(tiny_model), *GRID, "--json", "--export", str(out), timeout=900)
    assert r.returncode == 0, r.stderr
    (m,) = json.loads(r.stdout)["models"]
    res = m["results"]
    assert len(res) == 12 and m["grid_size"] == 12
    bad = [x for x in res if x["point"]["kv"] != "f16" and x["point"]["fa"] == "off"]
    assert len(bad) == 4
    for x in bad:  # quantized V without flash attention: llama.cpp refuses; recorded, not fatal
        assert x["status"] == "unsupported" and "flash_attn" in x["cause"]
        assert x["mean_ts"] is None
    good = [x for x in res if x not in bad]
    for x in good:
        assert x["status"] == "ok" and x["mean_ts"] > 0
        assert 3 <= x["n"] <= 10
        assert x["rel_ci"] <= 0.03 or x["n"] == 10  # adaptive stop: CI target met or cap reached
        # the CI is over llama-bench processes (≥ 3), and it is centred on their means
        assert x["processes"] >= 3 and len(x["process_means"]) == x["processes"]
        assert x["ci_low"] < sum(x["process_means"]) / x["processes"] < x["ci_high"]
        assert x["build_id"] == runtime.build_id and x["model_sha256"] == m["sha256"]
    tg = [x for x in good if x["kind"] == "tg"]
    assert all(x["efficiency"] is not None and x["efficiency"] > 0 for x in tg)
    assert m["best_tg"]["result"]["kind"] == "tg" and m["best_threads_tg"] == 1
    # the JSONL is llama-bench's own row format, one per measured point
    lines = out.read_text().splitlines()
    assert len(lines) == 8
    runs = parse_bench_json("[" + ",".join(lines) + "]")
    by_mean = sorted(round(x.avg_ts, 6) for x in runs)
    assert by_mean == sorted(round(x["mean_ts"], 6) for x in good)
    assert all(len(x.samples_ts) >= 3 for x in runs)


def test_killed_sweep_resumes_without_loss(
    runtime: Runtime, tiny_model: Path, tmp_path: Path, _data_home: Path
) -> None:
    db = _data_home / "edgebench.sqlite"
    argv = [sys.executable, "-m", "edgebench", "sweep", str(tiny_model), *GRID, "-n", "64", "--json"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_rows(db)) < 3 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = {k: (s, rec) for k, s, rec in _rows(db)}
    assert 3 <= len(before) < 12, "the sweep should have been killed mid-way"
    r = edgebench("sweep", str(tiny_model), *GRID, "-n", "64", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    after = {k: (s, rec) for k, s, rec in _rows(db)}
    assert len(after) == 12  # every point once: nothing lost, nothing duplicated
    for k, v in before.items():
        assert after[k] == v  # rows measured before the kill are kept as they were
    res = json.loads(r.stdout)["models"][0]["results"]
    assert sum(x["resumed"] for x in res) == len(before)


def test_adaptive_visits_fewer_points(runtime: Runtime, tiny_model: Path) -> None:
    r = edgebench(
        "sweep",
        str(tiny_model),
        "--threads",
        "1,2",
        "--kv",
        "f16,q8_0,q4_0",
        "--fa",
        "on,off",
        "--ubatch",
        "64,128",
        "-p",
        "32",
        "-n",
        "16",
        "--json",
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    (m,) = json.loads(r.stdout)["models"]
    assert m["search"] == "adaptive" and m["grid_size"] == 48
    assert m["measured"] < 0.5 * m["grid_size"]
    assert {x["point"]["ubatch"] for x in m["results"] if x["kind"] == "tg"} == {128}  # ubatch: pp only
    # quantized V without FA: refused once (by the tg descent, which runs first), never tried again
    refused = [x for x in m["results"] if x["status"] == "unsupported"]
    assert refused and {x["kind"] for x in refused} == {"tg"}
    assert {(x["point"]["fa"], x["point"]["kv"]) for x in refused} == {("off", "q8_0"), ("off", "q4_0")}
    check = m["server_check"]
    assert check["status"] == "ok", check["cause"]
    assert check["tg_mean"] > 0 and check["pp_mean"] > 0 and check["tg_ratio"] > 0
    rec = m["recommended"]
    assert rec["threads"] == m["best_threads_tg"] and rec["threads_batch"] == m["best_threads_pp"]
