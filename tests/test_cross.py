"""The Arm presets, for real: cross-compiled for aarch64 and run under qemu-user on a tiny model.

Slow (a full llama.cpp build per preset the first time; cached after). Runs when Debian's
g++-aarch64-linux-gnu and qemu-user are installed (`make test-cross` installs them), else skips.
qemu proves the binaries are correct aarch64 code that loads and runs a model; it says nothing
about a board's speed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgebench.config import load_config
from edgebench.runtime.bench import parse_bench_json
from edgebench.runtime.build import build
from edgebench.runtime.presets import PRESETS

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
