"""`plan --rpc`: layers over the head and the workers by each one's usable memory — contiguous,
each device inside its memory, the output with the last worker — and the flags it prints load
for real on two rpc-servers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_inproc import run as cli
from edgebench.fleet.split import plan_split
from edgebench.fleet.worker import RpcWorker
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerProcess
from edgebench.testing.synth import write_tiny_llama

W = [("10.0.0.2:50052", 200.0), ("10.0.0.3:50052", 200.0)]


def test_split_fills_the_head_then_each_worker(gemma_path: Path) -> None:
    m = read_model_info(gemma_path)
    sp = plan_split(m, RuntimeConfig(ctx=4096), head_usable_mib=307, workers=W)
    assert sp.fits and not sp.fits_one_host
    layers = [i for d in sp.devices for i in d.layers]
    assert layers == list(range(m.n_layer))  # every layer once, in order: contiguous per device
    assert all(d.total_mib <= d.usable_mib for d in sp.devices)
    used = sp.workers_used
    ngl = str(sum(len(d.layers) for d in used) + 1)
    split = ",".join(str(len(d.layers)) for d in used)
    assert sp.flags() == ["-ngl", ngl, "--rpc", ",".join(d.name for d in used), "-ts", split]
    # the tied output (gemma: the embedding again, 171 MiB) lands with the last worker
    assert used[-1].weights_mib > 150


def test_one_host_is_said_and_nothing_is_offloaded(gemma_path: Path) -> None:
    sp = plan_split(read_model_info(gemma_path), RuntimeConfig(ctx=4096), head_usable_mib=4096, workers=W)
    assert sp.fits and sp.fits_one_host and sp.flags() == []


def test_cli_split_and_its_refusals(gemma_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["plan", str(gemma_path), "--rpc", "10.0.0.2:50052,10.0.0.3:50052"]
    r = cli(monkeypatch, *base, "--rpc-mem", "200,200", "--budget-gib", "0.3")
    assert r.code == 0, r.stderr
    assert "flags: -ngl" in r.stdout and "--rpc 10.0.0.2:50052" in r.stdout
    assert "does not fit" in cli(monkeypatch, *base, "--rpc-mem", "20,20", "--budget-gib", "0.1").error_line()
    assert "no host probe" in cli(monkeypatch, *base).error_line()  # no --rpc-mem: the workers are asked
    assert "one per --rpc worker" in cli(monkeypatch, *base, "--rpc-mem", "200").error_line()
    assert "one per --rpc worker" in cli(monkeypatch, *base, "--rpc-mem", "200,nan").error_line()
    r = cli(monkeypatch, "plan", str(gemma_path), "--rpc", "10.0.0.2", "--rpc-mem", "200")
    assert "host:port" in r.error_line()
    r = cli(monkeypatch, *base, "--rpc-mem", "200,200", "--budget-gib", "8")
    assert "fits the head alone" in r.stdout


def test_the_printed_split_loads_on_real_workers(runtime: Runtime, tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "tiny6.gguf", n_layer=6, n_embd=256, n_ff=512, ftype="f32")
    info = read_model_info(model)
    cfg = RuntimeConfig(threads=2, ctx=512)
    full = plan_split(info, cfg, head_usable_mib=10_000, workers=[]).one_host_mib
    with (
        RpcWorker(runtime, "127.0.0.1", 23311, threads=1) as a,
        RpcWorker(runtime, "127.0.0.1", 23312, threads=1) as b,
    ):
        # the head holds all but ~2 layers; the workers share the rest
        sp = plan_split(
            info, cfg, head_usable_mib=full - 1.0, workers=[(a.endpoint, 64.0), (b.endpoint, 64.0)]
        )
        assert sp.fits and sp.workers_used
        flags = sp.flags()
        ngl, rpc, ts = int(flags[1]), flags[3], flags[5]
        run = cfg.model_copy(
            update={
                "ngl": ngl,
                "rpc": tuple(rpc.split(",")),
                "tensor_split": tuple(map(float, ts.split(","))),
            }
        )
        with ServerProcess(runtime, str(model), run, tmp_path / "srv.log", verbose=True):
            log = (tmp_path / "srv.log").read_text()
    for d in sp.workers_used:
        m = re.search(rf"RPC\d*\[{re.escape(d.name)}\] model buffer size\s*=\s*([\d.]+) MiB", log)
        assert m and float(m.group(1)) > 0, (d.name, log[-3000:])


def test_the_head_asks_each_worker_its_memory(
    gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edgebench worker` serves its host probe on port+1; `plan --rpc` without --rpc-mem reads it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from edgebench.fleet.probe import fetch_probe

    env = {**os.environ, "EDGEBENCH_HOME": str(tmp_path / "w")}
    argv = [
        sys.executable,
        "-m",
        "edgebench",
        "worker",
        "--port",
        "23321",
        "--threads",
        "1",
        "--mem-cap-mib",
        "900",
    ]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        probe = None
        while probe is None and time.monotonic() < deadline and p.poll() is None:
            try:
                probe = httpx.get("http://127.0.0.1:23322/host", timeout=1).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        assert probe is not None, p.communicate(timeout=10)
        assert probe["usable_mib"] == 900 and probe["fingerprint"] and probe["rpc"] == "127.0.0.1:23321"
        assert fetch_probe("127.0.0.1:23321")["usable_mib"] == 900
        r = cli(monkeypatch, "plan", str(gemma_path), "--rpc", "127.0.0.1:23321", "--budget-gib", "0.3")
        assert r.code == 0, r.stderr
        assert "/ 900" in r.stdout  # the worker's own figure
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    assert p.returncode == 0
    r = cli(monkeypatch, "plan", str(gemma_path), "--rpc", "127.0.0.1:23321", "--budget-gib", "0.3")
    assert "no host probe" in r.error_line()  # gone: say so, and how to give the figure instead


def test_a_worker_whose_probe_port_is_taken_says_so_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import psutil

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    probe_port = taken.getsockname()[1]
    try:
        r = cli(monkeypatch, "worker", "--port", str(probe_port - 1), "--threads", "1")
    finally:
        taken.close()
    line = r.error_line()
    assert r.code != 0 and f"host probe 127.0.0.1:{probe_port}: cannot listen" in line, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert not [p for p in psutil.process_iter(["name"]) if p.info["name"] == "rpc-server"]
