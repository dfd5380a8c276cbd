"""The Arm presets, for real: cross-compiled for aarch64 and run under qemu-user on a tiny model.

Slow (a full llama.cpp build per preset the first time; cached after). Runs when Debian's
g++-aarch64-linux-gnu and qemu-user are installed (`make test-cross` installs them), else skips.
qemu proves the binaries are correct aarch64 code that loads and runs a model; it says nothing
about a board's speed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edgebench.config import load_config
from edgebench.models.gguf import read_model_info
from edgebench.models.memory import plan_memory
from edgebench.runtime.bench import parse_bench_json
from edgebench.runtime.build import build
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.memlog import read_memory_log
from edgebench.runtime.presets import PRESETS
from edgebench.runtime.server import free_port
from edgebench.testing.zoo import write_zoo_model

pytestmark = [
    pytest.mark.cross,
    pytest.mark.skipif(
        not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
        reason="needs g++-aarch64-linux-gnu and qemu-user (make test-cross installs them)",
    ),
]


@pytest.mark.parametrize("preset", ["rk3588", "rpi5"])
def test_arm_preset_runs_under_qemu(preset: str, tiny_model: Path) -> None:
    cfg = load_config()
    info = build(builds_dir=cfg.builds_dir, cache_dir=cfg.cache_dir, preset=PRESETS[preset])
    assert info.arch == "aarch64"
    bench = Path(info.bin_dir) / "llama-bench"
    head = bench.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    res = subprocess.run(
        [
            "qemu-aarch64",
            "-L",
            "/usr/aarch64-linux-gnu",
            str(bench),
            "-m",
            str(tiny_model),
            "-p",
            "16",
            "-n",
            "4",
            "-r",
            "1",
            "-t",
            "2",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    runs = parse_bench_json(res.stdout)
    assert {r.test for r in runs} == {"pp16", "tg4"}
    assert all(r.avg_ts > 0 for r in runs)
    flags = " ".join(info.cmake_args)
    assert "-mcpu=cortex-a76" in flags


def _load_under_qemu(server: Path, model: Path, ctx: int, log: Path, timeout_s: float = 900) -> None:
    """Start the aarch64 llama-server under qemu-aarch64 until the model is loaded (it prints its
    buffers while loading, at -lv 4), then stop it: load only, no request."""
    argv = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(server), "-m", str(model), "-c", str(ctx)]
    argv += ["-t", "2", "-np", "1", "--port", str(free_port()), "-lv", "4", "--no-webui"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                text = log.read_text(errors="replace")
                if "server is listening" in text or "model loaded" in text:
                    break
                time.sleep(1)
            else:
                raise AssertionError(
                    f"llama-server under qemu did not load {model.name}: {log.read_text()[-2000:]}"
                )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


@pytest.mark.parametrize("preset", ["rk3588", "rpi5"])
def test_arm_plan_matches_an_aarch64_load(preset: str, gemma_path: Path, tmp_path: Path) -> None:
    """The planner's aarch64 prediction (the preset's declared target features) against the buffers
    the preset's own llama-server reports under qemu: model, CPU_REPACK, KV within 2 %. With NEON
    dotprod (both presets, see presets.py) gemma-3-270m's Q8_0 tied embedding gets a ~170 MiB
    repacked output copy."""
    cfg = load_config()
    info = build(builds_dir=cfg.builds_dir, cache_dir=cfg.cache_dir, preset=PRESETS[preset])
    server = Path(info.bin_dir) / "llama-server"
    features = PRESETS[preset].target_features
    assert features is not None and "i8mm" not in features
    models = [
        (gemma_path, 2048),
        (write_zoo_model("kquant", tmp_path), 4096),
        (write_zoo_model("tied-q4_0", tmp_path), 4096),
        (write_zoo_model("moe-q4tail", tmp_path), 4096),
    ]
    for path, ctx in models:
        m = read_model_info(path)
        log = tmp_path / f"{preset}-{path.stem}.log"
        _load_under_qemu(server, path, ctx, log)
        host = read_memory_log(log).host
        assert host is not None, log.read_text()[-2000:]
        # the preset's declared target features are what the binary was compiled with
        system_info = next(ln for ln in log.read_text().splitlines() if "system_info:" in ln)
        assert ("DOTPROD = 1" in system_info) == ("dotprod" in features), system_info
        assert ("MATMUL_INT8 = 1" in system_info) == ("i8mm" in features), system_info
        p = plan_memory(m, RuntimeConfig(ctx=ctx, flash_attn="auto"), host_arch="aarch64", cpu_flags=features)
        print(
            f"{preset} {m.name} ctx {ctx}: model {p.model_mib:.2f}/{host.model_mib} repack "
            f"{p.repack_mib:.2f}/{host.repack_mib} KV {p.kv_mib:.2f}/{host.kv_mib} MiB (predicted/measured)"
        )
        for what, pred, meas in (
            ("model", p.model_mib, host.model_mib),
            ("repack", p.repack_mib, host.repack_mib or 0.0),
            ("KV", p.kv_mib, host.kv_mib),
        ):
            assert meas is not None and abs(pred - meas) <= max(0.02 * meas, 0.006), (preset, m.name, what)
