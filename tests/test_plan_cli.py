"""`edgebench plan`: predictions labelled as such, the inverse --fit, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.testing.zoo import write_qwen2
from helpers import edgebench


def test_plan_json_is_labelled_predicted(gemma_path: Path) -> None:
    r = edgebench("plan", str(gemma_path), "--ctx", "8192", "--kv", "q8_0", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)["plan"]
    assert p["predicted"] is True and p["n_ctx"] == 8192
    # gemma-3: 15 SWA layers keep ~window-sized caches, only 3 global layers grow with context
    assert 0 < p["kv_swa_mib"] < p["kv_mib"]
    bigger = json.loads(edgebench("plan", str(gemma_path), "--ctx", "32768", "--kv", "q8_0", "--json").stdout)
    assert bigger["plan"]["kv_mib"] - bigger["plan"]["kv_swa_mib"] == pytest.approx(
        4 * (p["kv_mib"] - p["kv_swa_mib"]), rel=0.01
    )


def test_fit_is_monotone_in_kv_type(gemma_path: Path) -> None:
    r = edgebench("plan", str(gemma_path), "--fit", "--budget-gib", "0.36", "--json")
    assert r.returncode == 0, r.stderr
    fit = json.loads(r.stdout)["fit"]
    assert fit["q4_0"] >= fit["q8_0"] >= fit["f16"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ctx", "0"], "--ctx 0: llama.cpp reads 0"),
        (["--ctx", "99999"], "above gemma-3-270m"),
        (["--kv", "q3_k"], "--kv 'q3_k': unknown KV cache type"),
        (["--kv-layers", "0-40:q8_0"], "layer 40 does not exist"),
        (["--fit"], "--fit needs --budget-gib"),
    ],
)
def test_bad_inputs(gemma_path: Path, args: list[str], needle: str) -> None:
    edgebench("models", "add", str(gemma_path), "--name", "gemma-3-270m-q4_k_m")
    r = edgebench("plan", "gemma-3-270m-q4_k_m", *args)
    assert r.returncode == 1, r.stdout
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_plan_for_a_board_preset_repacks_the_tied_embedding(gemma_path: Path) -> None:
    r = edgebench("plan", str(gemma_path), "--ctx", "2048", "--preset", "rpi5", "--json")
    assert r.returncode == 0, r.stderr
    pi = json.loads(r.stdout)["plan"]
    # NEON dotprod repacks Q4_K/Q6_K/Q8_0 matmuls and the tied Q8_0 output (170 MiB)
    assert pi["repack_mib"] == pytest.approx(193.38, abs=0.01)
    # the rk3588 preset compiles dotprod too (-march armv8.2-a+dotprod+fp16): the same repack
    rk = json.loads(
        edgebench("plan", str(gemma_path), "--ctx", "2048", "--preset", "rk3588", "--json").stdout
    )
    assert rk["plan"]["repack_mib"] == pytest.approx(193.38, abs=0.01)
    generic = json.loads(edgebench("plan", str(gemma_path), "--preset", "generic-arm64", "--json").stdout)
    assert generic["plan"]["repack_mib"] == 0.0  # armv8-a: no dotprod kernels compiled in
    bad = edgebench("plan", str(gemma_path), "--preset", "rk3588", "--arch", "x86_64")
    assert bad.returncode == 1 and "disagree" in bad.stderr


@pytest.mark.llama
def test_unknown_architecture_gets_llama_cpp_projection(runtime: object, tmp_path: Path) -> None:
    model = write_qwen2(tmp_path / "tiny-qwen2.gguf")
    r = edgebench("plan", str(model), "--ctx", "4096", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["plan"]["unverified"] == ["KV", "compute"]
    proj = out["llama_cpp_projection"]
    assert proj["source"] == "llama-fit-params" and proj["error"] is None
    # llama.cpp's own figure for the same KV cache (whole MiB): 2 layers x 4096 x 2 x 128 x 2 B = 4 MiB
    assert proj["context_mib"] == 4 and proj["model_mib"] >= 1 and proj["compute_mib"] > 0
    text = edgebench("plan", str(model), "--ctx", "4096").stdout
    assert (
        "llama.cpp projection (llama-fit-params" in text and "not one the planner has been checked on" in text
    )
