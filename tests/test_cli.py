"""The real CLI in a subprocess: JSON output, and bad input → one line, exit ≠ 0, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.runtime.locate import Runtime
from helpers import FIXTURES, edgebench


def _one_error_line(stderr: str, *needles: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines, "expected an error line"
    assert lines[-1].startswith("edgebench: error: "), stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


@pytest.mark.parametrize(
    ("board", "clusters", "big", "little", "npu"),
    [
        ("rk3588", [[0, 1, 2, 3], [4, 5], [6, 7]], [4, 5, 6, 7], [0, 1, 2, 3], True),
        ("rpi5", [[0, 1, 2, 3]], [0, 1, 2, 3], [], False),
    ],
)
def test_doctor_json_on_board_fixtures(
    board: str, clusters: list[list[int]], big: list[int], little: list[int], npu: bool
) -> None:
    r = edgebench("doctor", "--sysroot", str(FIXTURES / "sysfs" / board), "--json")
    assert r.returncode == 0, r.stderr
    host = json.loads(r.stdout)["host"]
    assert [c["cpus"] for c in host["clusters"]] == clusters
    assert host["big_cpus"] == big and host["little_cpus"] == little
    assert any(a["kind"] == "npu" for a in host["accelerators"]) is npu
    assert host["bandwidth_gbs"] is None  # never measure this machine and call it the board


def test_doctor_json_on_this_host() -> None:
    r = edgebench("doctor", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["host"]["n_cpus"] >= 1
    assert doc["host"]["bandwidth_gbs"] > 0.1
    assert doc["host"]["arch"] in ("x86_64", "aarch64")


def test_models_add_list_show(tiny_model: Path) -> None:
    r = edgebench("models", "add", str(tiny_model), "--name", "tiny", "--json")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added[0]["name"] == "tiny" and added[0]["arch"] == "llama" and len(added[0]["sha256"]) == 64
    listed = json.loads(edgebench("models", "list", "--json").stdout)
    assert [m["name"] for m in listed] == ["tiny"]
    shown = edgebench("models", "show", "tiny")
    assert shown.returncode == 0
    assert "base model: no chat template" in shown.stdout.replace("\n", " ")
    by_sha = json.loads(edgebench("models", "show", added[0]["sha256"][:12], "--json").stdout)
    assert by_sha["path"] == str(tiny_model.resolve())


def test_truncated_gguf(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    r = edgebench("models", "add", str(bad))
    assert r.returncode == 1
    _one_error_line(r.stderr, str(bad), "truncated")


def test_text_file_renamed_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("# my notes\nnot a model\n")
    r = edgebench("models", "add", str(bad))
    assert r.returncode == 1
    _one_error_line(r.stderr, str(bad), "not a GGUF file")


def test_missing_model_file(tmp_path: Path) -> None:
    r = edgebench("models", "add", str(tmp_path / "nope.gguf"))
    assert r.returncode == 1
    _one_error_line(r.stderr, "nope.gguf", "no such file")


def test_bad_config_value(tmp_path: Path) -> None:
    (tmp_path / "edgebench.toml").write_text('[sweep]\nkv = ["q4_0", "fp8"]\n')
    r = edgebench("doctor", "--json", cwd=tmp_path)
    assert r.returncode == 1
    _one_error_line(r.stderr, "edgebench.toml", "sweep.kv", "'fp8'")
    assert r.stdout == ""


def test_unknown_preset() -> None:
    r = edgebench("runtime", "build", "--preset", "rk3399")
    assert r.returncode == 1
    _one_error_line(r.stderr, "unknown build preset 'rk3399'", "rk3588")


def test_missing_binary_in_configured_bin_dir(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "edgebench.toml").write_text('[llama_cpp]\nbin_dir = "bin"\n')
    r = edgebench("runtime", "show", cwd=tmp_path)
    assert r.returncode == 1
    _one_error_line(r.stderr, str(tmp_path / "bin"), "llama-bench", "not found")


def test_usage_error_is_one_line() -> None:
    r = edgebench("models", "show", "--bogus")
    assert r.returncode == 2
    _one_error_line(r.stderr, "--bogus")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = edgebench("--debug", "models", "add", str(tmp_path / "nope.gguf"))
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "ModelError" in r.stderr


@pytest.mark.llama
def test_runtime_show_json(runtime: Runtime) -> None:
    r = edgebench("runtime", "show", "--json")
    assert r.returncode == 0, r.stderr
    rt = json.loads(r.stdout)
    assert rt["build_id"] == runtime.build_id
    assert "CPU" in rt["backends"]
    assert {"llama-bench", "llama-server", "llama-quantize", "rpc-server"} <= set(rt["binaries"])


@pytest.mark.llama
def test_run_measures_and_resumes(runtime: Runtime, tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "edgebench.toml").write_text(
        f'[[models]]\npath = "{tiny_model}"\nname = "tiny"\n\n'
        "[sweep]\nthreads = [1]\n\n"
        '[run]\nkv = ["f16", "q8_0"]\nn_prompt = 32\nn_gen = 16\ncontext_max = 2048\nsuite = "mini"\n'
        f'suite_dirs = ["{FIXTURES / "suites"}"]\n'
    )
    r = edgebench("run", "--json", "--no-bandwidth", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["runtime"]["build_id"] == runtime.build_id
    (sw,) = doc["sweeps"]
    tests = {(x["test"], x["point"]["kv"]) for x in sw["results"] if x["depth"] == 0}
    assert tests == {("pp32", "f16"), ("tg16", "f16"), ("pp32", "q8_0"), ("tg16", "q8_0")}
    # [run] depths = [0, 1024]: decode's winner measured once more with 1024 tokens in the cache
    # (only decode: what the report plots; a deep prefill would refill the context every rep)
    deep = {(x["kind"], x["point"]["kv"]) for x in sw["results"] if x["depth"] == 1024}
    assert deep == {("tg", sw["best_tg"]["result"]["point"]["kv"])}
    for x in sw["results"]:
        assert x["status"] == "ok" and x["mean_ts"] > 0 and x["n"] >= 3
        assert x["resumed"] is False
    assert sw["server_check"]["status"] == "ok"
    assert sw["recommended"]["threads"] == 1
    again = json.loads(edgebench("run", "--json", "--no-bandwidth", cwd=tmp_path).stdout)
    assert all(x["resumed"] for x in again["sweeps"][0]["results"])
    assert [x["mean_ts"] for x in again["sweeps"][0]["results"]] == [x["mean_ts"] for x in sw["results"]]


def test_progress_prints_plain_lines_when_not_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from edgebench.cli._common import counting_progress

    buf = io.StringIO()
    with counting_progress(Console(file=buf, force_terminal=False), every_s=0.0) as bar:
        task = bar.add_task("gemma · core", total=4)
        for _ in range(3):
            bar.update(task, advance=1)
    lines = [line for line in buf.getvalue().splitlines() if line]
    assert lines[0] == "gemma · core: 1/4"  # one sample: no rate yet, so no ETA
    assert lines[-1].startswith("gemma · core: 3/4, ETA 0:0")
    quiet = io.StringIO()
    with counting_progress(Console(file=quiet, force_terminal=False), every_s=3600.0) as bar:
        bar.update(bar.add_task("x", total=2), advance=2)
    assert quiet.getvalue().strip() == ""
