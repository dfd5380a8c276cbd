"""The real llama.cpp build: locate, version/dialect probing, llama-bench through our runner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgebench.errors import RuntimeNotFound
from edgebench.runtime.bench import parse_bench_json, run_bench
from edgebench.runtime.flags import BenchTest, Dialect, RuntimeConfig
from edgebench.runtime.locate import Runtime, locate
from edgebench.runtime.proc import ExitCause

pytestmark = pytest.mark.llama


def test_build_is_described(runtime: Runtime) -> None:
    assert runtime.found_via in ("cache", "path", "config")
    assert runtime.build_id.startswith(f"b{runtime.build_number}-{runtime.commit}-")
    assert runtime.dialect == Dialect()  # the pinned tree speaks the current flag dialect
    assert "CPU" in runtime.backends
    assert runtime.missing == []
    assert (runtime.compiler != "unknown" and "x86_64" in runtime.target) or "aarch64" in runtime.target


def test_locate_order(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = Path(runtime.bin_dir)
    # configured dir wins
    assert locate(bin_dir=bin_dir, builds_dir=tmp_path).found_via == "config"
    # then PATH
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert locate(bin_dir=None, builds_dir=tmp_path / "empty").found_via == "path"
    # nothing anywhere: the error names the fix
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(RuntimeNotFound, match="edgebench runtime build"):
        locate(bin_dir=None, builds_dir=tmp_path / "empty")


def test_configured_dir_missing_server(runtime: Runtime, tmp_path: Path) -> None:
    shutil.copy(runtime.binaries["llama-bench"], tmp_path / "llama-bench")
    with pytest.raises(RuntimeNotFound, match=r"llama-server not found there"):
        locate(bin_dir=tmp_path, builds_dir=tmp_path)


def test_bench_on_tiny_model(runtime: Runtime, tiny_model: Path) -> None:
    cfg = RuntimeConfig(
        threads=1, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on", ubatch=64, batch=64
    )
    out = run_bench(runtime, str(tiny_model), cfg, BenchTest(n_prompt=32, n_gen=0, depth=64, reps=3))
    assert out.status is ExitCause.OK, out.detail
    (r,) = out.runs
    assert r.test == "pp32 @ d64" and r.n_depth == 64
    assert len(r.samples_ts) == 3 and r.avg_ts > 0
    assert r.raw["type_k"] == "q8_0" and r.raw["n_ubatch"] == 64 and r.raw["n_threads"] == 1
    assert r.model_n_params > 0 and out.peak_rss_mib > 1


def test_bad_argument_is_a_classified_result(runtime: Runtime, tiny_model: Path) -> None:
    out = run_bench(
        runtime,
        str(tiny_model),
        RuntimeConfig(threads=1, extra=("--no-such-flag",)),
        BenchTest(n_prompt=8, reps=1),
    )
    assert out.status is ExitCause.BAD_ARGS
    assert "--no-such-flag" in out.detail
    assert out.runs == []


def test_corrupt_model_is_a_classified_result(runtime: Runtime, tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(tiny_model.read_bytes()[:4096])
    out = run_bench(runtime, str(bad), RuntimeConfig(threads=1), BenchTest(n_prompt=8, reps=1))
    assert out.status is not ExitCause.OK
    assert out.detail


def test_parse_rejects_non_json() -> None:
    with pytest.raises(ValueError, match="no JSON array"):
        parse_bench_json("| model | size |\n")


def test_llama_server_returns_outgrown_buffers_unless_the_user_says_otherwise(
    runtime: Runtime, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """glibc's mmap threshold is fixed for the servers edgebench starts (the work buffers a fill
    outgrows go back to the OS; the planner counts only the current one); a user's value wins."""
    from edgebench.runtime.server import ServerProcess

    def environ(value: str | None) -> list[bytes]:
        if value is None:
            monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
        else:
            monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", value)
        cfg = RuntimeConfig(threads=1, ctx=256, flash_attn="off")
        with ServerProcess(runtime, str(tiny_model), cfg, tmp_path / "server.log") as srv:
            return Path(f"/proc/{srv.pid}/environ").read_bytes().split(b"\0")

    assert b"MALLOC_MMAP_THRESHOLD_=131072" in environ(None)
    assert b"MALLOC_MMAP_THRESHOLD_=65536" in environ("65536")
