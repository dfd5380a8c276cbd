"""The embedded default model end to end: what `make run` does, on a throwaway data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.runtime.locate import Runtime
from helpers import edgebench

pytestmark = [pytest.mark.llama, pytest.mark.gemma]


def test_run_on_default_model(runtime: Runtime, gemma_path: Path, _data_home: Path) -> None:
    r = edgebench("run", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (model,) = doc["models"]
    assert model["name"] == "gemma-3-270m-q4_k_m"
    assert model["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert model["chat_template"] is False
    assert Path(model["path"]).parent == _data_home / "models"
    measured = {m["test"]: m for m in doc["measured"]}
    assert measured["pp128"]["status"] == "ok" and measured["pp128"]["mean_ts"] > 1
    assert measured["tg32"]["status"] == "ok" and measured["tg32"]["mean_ts"] > 1
    # prefill is batched, decode is one token at a time: on any CPU pp t/s exceeds tg t/s
    assert measured["pp128"]["mean_ts"] > measured["tg32"]["mean_ts"]
    assert doc["host"]["bandwidth_gbs"] > 0.1
    shown = edgebench("models", "show", "gemma-3-270m-q4_k_m")
    assert "base model: no chat template" in shown.stdout.replace("\n", " ")
    assert "512 tokens on 15 of 18 layers" in shown.stdout
