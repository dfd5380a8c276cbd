"""The embedded default model end to end: what `make run` does, on a throwaway data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.runtime.locate import Runtime
from helpers import FIXTURES, edgebench

pytestmark = [pytest.mark.llama, pytest.mark.gemma]


@pytest.mark.timeout(1800)  # two models, end to end; minutes on a quiet 2-core machine
def test_run_on_default_model(runtime: Runtime, gemma_path: Path, _data_home: Path, tmp_path: Path) -> None:
    # The default model and set-up exactly as `make run`; a narrower sweep keeps the test short.
    (tmp_path / "edgebench.toml").write_text(
        "[sweep]\nthreads = [1, 2]\n\n"
        '[run]\nkv = ["f16"]\nn_prompt = 128\nn_gen = 32\ncontext_max = 4096\nsuite = "mini"\n'
        f'suite_dirs = ["{FIXTURES / "suites"}"]\nrequantized_variants = false\n'
        "race_max_rounds = 2\n"
    )
    r = edgebench("run", "--json", timeout=1700, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    model, chat = doc["models"]  # the default set: the base model first, then the instruct one
    assert chat["name"] == "smollm2-135m-instruct-q4_1" and chat["chat_template"] is True
    assert chat["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert model["name"] == "gemma-3-270m-q4_k_m"
    assert model["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert model["chat_template"] is False
    assert Path(model["path"]).parent == _data_home / "models"
    sw, sw_chat = doc["sweeps"]
    assert sw_chat["best_tg"]["result"]["status"] == "ok"
    modes = {q["target"]: q["mode"] for q in doc["quality"]}
    assert modes == {"gemma-3-270m-q4_k_m": "completion", "smollm2-135m-instruct-q4_1": "chat"}
    pp, tg = sw["best_pp"]["result"], sw["best_tg"]["result"]
    assert pp["test"] == "pp128" and pp["status"] == "ok" and pp["mean_ts"] > 1
    assert tg["test"] == "tg32" and tg["status"] == "ok" and tg["mean_ts"] > 1
    # prefill is batched, decode is one token at a time: on any CPU pp t/s exceeds tg t/s
    assert pp["mean_ts"] > tg["mean_ts"]
    # decode of a 250 MB model cannot beat the memory bus: efficiency is a fraction
    assert 0 < tg["efficiency"] < 1
    assert sw["server_check"]["status"] == "ok" and sw["server_check"]["tg_mean"] > 1
    assert doc["host"]["bandwidth_gbs"] > 0.1
    shown = edgebench("models", "show", "gemma-3-270m-q4_k_m")
    assert "base model: no chat template" in shown.stdout.replace("\n", " ")
    assert "512 tokens on 15 of 18 layers" in shown.stdout
