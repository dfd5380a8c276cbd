"""Recipes on the real gemma-3-270m (requantized from its Q4_K_M, as the default-model variants
are): the preview is the file to the byte, and the solver's mix for a RAM budget between two
uniform quants fits and measures no worse than the uniform quant that fits."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.kvlab.lab import load_text
from edgebench.models.gguf import _read_header, read_model_info
from edgebench.quant.apply import apply_recipe
from edgebench.quant.fit import ram_plan
from edgebench.quant.measure import Evaluator
from edgebench.quant.preview import plan_file
from edgebench.quant.recipe import Recipe, Rule
from edgebench.quant.solve import solve, uniform
from edgebench.quant.types import RecipeError
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime

GEMMA_RECIPES = [
    uniform("Q4_K"),  # 640-wide rows fall back to Q5_0
    uniform("Q4_0"),
    uniform("Q2_K"),
    Recipe(
        name="embd-q5_0", base_type="Q4_K", rules=(Rule(tensors="re:^token_embd\\.weight$", type="Q5_0"),)
    ),
    Recipe(
        name="layers",
        base_type="Q4_0",
        rules=(Rule(tensors="ffn_down", layers="0-5", type="Q4_K"), Rule(tensors="attn_output", type="Q2_K")),
    ),
]


def test_preview_is_exact_on_gemma(runtime: Runtime, gemma_path: Path, tmp_path: Path) -> None:
    for r in GEMMA_RECIPES:
        plan = plan_file(gemma_path, r)
        out = apply_recipe(runtime, plan, tmp_path / f"{r.name}.gguf", n_layer=18)
        assert abs(out.size_error_pct) <= 0.1, (r.name, out.file_bytes, plan.file_bytes)
        assert out.file_bytes == plan.file_bytes, r.name
        header, _ = _read_header(Path(out.path))
        assert {t.name: t.ggml_type for t in header.tensors} == {t.name: t.dst_type for t in plan.tensors}
        Path(out.path).unlink()


@pytest.mark.timeout(2700)  # minutes on a quiet 2-core machine, several times that under load
def test_solver_beats_the_uniform_quant_that_fits(runtime: Runtime, gemma_path: Path, tmp_path: Path) -> None:
    info = read_model_info(gemma_path)
    cfg = RuntimeConfig(ctx=4096)
    q4k, q4_0 = (plan_file(gemma_path, uniform(t)) for t in ("Q4_K", "Q4_0"))
    lo, hi = (ram_plan(info, p, cfg).host_total_mib for p in (q4k, q4_0))
    assert lo < hi  # uniform Q4_0 is the smaller file but the bigger RAM: x86 repacks it
    budget = (lo + hi) / 2
    text = tmp_path / "text.txt"
    text.write_text(load_text())
    ev = Evaluator(runtime, gemma_path, tmp_path / "work", text, ctx=512, n_layer=info.n_layer)
    sol = solve(gemma_path, info, budget_mib=budget, cfg=cfg, ladder=["Q5_0", "Q4_K"], evaluator=ev)
    assert sol.ram_mib <= budget
    assert ram_plan(info, sol.plan, cfg).host_total_mib == sol.ram_mib
    mix = ev.measure(sol.plan).kld
    fits = ev.measure(q4k).kld  # the uniform quant that fits the budget
    assert mix.mean_kld <= fits.mean_kld, (mix.mean_kld, fits.mean_kld, sol.steps)


def test_a_budget_nothing_meets_is_one_line(runtime: Runtime, gemma_path: Path, tmp_path: Path) -> None:
    info = read_model_info(gemma_path)
    ev = Evaluator(runtime, gemma_path, tmp_path / "work", tmp_path / "unused.txt", ctx=512, n_layer=18)
    with pytest.raises(RecipeError) as exc:
        solve(
            gemma_path,
            info,
            budget_mib=64,
            cfg=RuntimeConfig(ctx=4096),
            ladder=["Q4_K", "Q2_K"],
            evaluator=ev,
        )
    msg = str(exc.value)
    assert "nothing fits" in msg and "\n" not in msg
    assert not (tmp_path / "work" / "base-512.kld").exists()  # refused before measuring anything
