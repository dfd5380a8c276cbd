"""`edgebench quant solve` end to end on a tiny F16 model: the recipe written, every candidate
quantized and verified (size vs preview, KLD, llama-server filled at the context, llama-bench),
stored as `quant` rows with their provenance, and the report with its plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_inproc import run as cli
from edgebench.config import load_config
from edgebench.models.gguf import read_model_info
from edgebench.quant.fit import ram_plan
from edgebench.quant.preview import plan_file
from edgebench.quant.recipe import load_recipe
from edgebench.quant.solve import keep_source, uniform
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Store
from edgebench.testing.zoo import write_f16_source


def test_solve_writes_verifies_and_stores(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_f16_source(tmp_path / "dense.gguf", "dense")
    info = read_model_info(src)
    cfg = RuntimeConfig(ctx=1024)
    lo = ram_plan(info, plan_file(src, uniform("Q4_0")), cfg).host_total_mib
    hi = ram_plan(info, plan_file(src, keep_source(src)), cfg).host_total_mib
    budget = (lo + hi) / 2
    out = tmp_path / "mix.toml"
    r = cli(monkeypatch, "quant", "solve", str(src), "--budget-mib", f"{budget:.2f}", "--ctx", "1024",
            "--types", "Q8_0,Q4_0", "--kld-ctx", "256", "-o", str(out), "--json")  # fmt: skip
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ram_predicted_mib"] <= budget
    recipe = load_recipe(out)
    assert recipe.source_sha256 == info.sha256 and recipe.build == runtime.build_id
    names = [c["recipe"]["name"] for c in data["candidates"]]
    assert names == ["uniform-q8_0", "uniform-q4_0", "mix"]
    for c in data["candidates"]:
        assert c["file_bytes"] == c["predicted_bytes"]
        assert c["ram_measured_mib"] is not None and c["fits"] is True
        assert c["tg_ts"] and c["pp_ts"] and c["mean_kld"] >= 0
        assert c["source_sha256"] == info.sha256 and c["build_id"] == runtime.build_id
    report = Path(data["report"])
    assert report.is_file() and "Pareto" in report.read_text() and report.with_suffix(".svg").is_file()
    with Store(load_config().store_path) as st:
        rows = list(st.rows("quant"))
    assert {row.provenance.model_sha256 for row in rows} == {c["sha256"] for c in data["candidates"]}
    assert all(row.params["source_sha256"] == info.sha256 for row in rows)


def test_solve_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_f16_source(tmp_path / "dense.gguf", "dense")
    for args, needle in (
        (["--budget-mib", "1"], "nothing fits"),
        (["--budget-mib", "100", "--pin", "attn>q8_0"], "GROUP>=TYPE"),
        (["--budget-mib", "100", "--pin", "attention>=q8_0"], "unknown group"),
        (["--budget-mib", "100", "--types", "Q4_0"], "at least two types"),
        (["--budget-mib", "100", "--types", "Q4_0,iq4_ks"], "ik_llama.cpp type"),
        (["--budget-mib", "-5"], "--budget-mib"),
        (["--budget-mib", "100", "--kv", "q9_0"], "KV type"),
    ):
        r = cli(monkeypatch, "quant", "solve", str(src), "--no-verify", *args)
        assert needle in r.error_line(), args
