"""Fake llama.cpp binaries for tests: shell scripts written into a test's tmp_path.

They stand in for llama-bench / llama-server where the test is about edgebench's handling of what
a binary does (garbage output, hangs, grandchildren holding the pipes, aborts), not about llama.cpp.
Every file is named fake_* on disk; the bin dir links the names llama.cpp uses to them.
"""

from __future__ import annotations

import json
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

from edgebench.runtime.flags import Dialect
from edgebench.runtime.locate import Runtime

__all__ = ["bench_row", "fake_bin_dir", "fake_runtime", "write_script"]

# What llama-server --version / --help print, enough for locate.probe_runtime.
_SERVER = """#!/bin/sh
case "$1" in
  --version) echo "version: 1 (fake000)" >&2; echo "built with fake-cc for fake-target" >&2; exit 0;;
  --help) echo "--load-mode --log-verbosity"; exit 0;;
  --list-devices) echo "Available devices:"; exit 0;;
esac
exit 1
"""


def write_script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def bench_row(
    n_prompt: int = 16, n_gen: int = 0, n_depth: int = 0, samples: list[Any] | None = None
) -> dict[str, Any]:
    """One llama-bench `-o json` row as tools/llama-bench prints it (the fields edgebench reads)."""
    ts = samples if samples is not None else [100.0, 102.0]
    return {
        "build_commit": "fake000",
        "build_number": 1,
        "cpu_info": "fake cpu",
        "backends": "CPU",
        "model_type": "llama ?B F32",
        "model_size": 1000,
        "model_n_params": 100,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "n_depth": n_depth,
        "avg_ts": sum(ts) / len(ts) if ts and all(isinstance(x, float) for x in ts) else 0.0,
        "stddev_ts": 1.0,
        "samples_ts": ts,
        "samples_ns": [1000000 for _ in ts],
    }


def fake_bin_dir(root: Path, bench_sh: str, *, stdout: bytes | None = None, server_sh: str = _SERVER) -> Path:
    """A bin dir whose llama-bench runs `bench_sh` (a /bin/sh body; `$OUT` is a file holding
    `stdout`, printed by `cat "$OUT"`) and whose llama-server answers the locate probes."""
    root.mkdir(parents=True, exist_ok=True)
    out = root / "fake_bench_stdout"
    out.write_bytes(stdout or b"")
    write_script(root / "fake_llama_bench", f"#!/bin/sh\nOUT={shlex.quote(str(out))}\n{bench_sh}\n")
    write_script(root / "fake_llama_server", server_sh)
    for name, target in (("llama-bench", "fake_llama_bench"), ("llama-server", "fake_llama_server")):
        link = root / name
        if not link.exists():
            link.symlink_to(target)
    return root


def fake_runtime(bin_dir: Path, build_id: str = "b1-fake000") -> Runtime:
    """A Runtime pointing at a fake bin dir, without running the locate probes (`build_id` is part
    of every stored row's key: one per fake keeps their rows apart)."""
    return Runtime(
        bin_dir=str(bin_dir),
        found_via="config",
        build_number=1,
        commit="fake000",
        compiler="fake-cc",
        target="fake-target",
        build_id=build_id,
        backends=["CPU"],
        binaries={"llama-bench": str(bin_dir / "llama-bench"), "llama-server": str(bin_dir / "llama-server")},
        missing=[],
        dialect=Dialect(),
    )


def python_script(code: str) -> str:
    """A /bin/sh body that runs `code` with this interpreter (for fakes that need logic)."""
    return f'exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "$@"'


def dumps(rows: Any) -> bytes:
    return json.dumps(rows).encode()
