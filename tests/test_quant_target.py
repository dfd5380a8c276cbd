"""Target mode: intervals decide (pass / marginal / fail), cheapest candidate first, and when
nothing passes the closest one is named with what it misses — on the real llama-bench."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cli_inproc import run as cli
from edgebench.kvlab.lab import load_text
from edgebench.models.gguf import read_model_info
from edgebench.quant.measure import Evaluator
from edgebench.quant.recipe import Recipe
from edgebench.quant.solve import keep_source, uniform
from edgebench.quant.target import TargetRow, Targets, judge, run_target
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.stats import Summary
from edgebench.testing.zoo import write_f16_source


def _row(tg: tuple[float, float, float] | None = None, kld: tuple[float, float] | None = None) -> TargetRow:
    s = None if tg is None else Summary(n=9, mean=tg[0], sd=1.0, ci_low=tg[1], ci_high=tg[2])
    return TargetRow(Recipe(name="r", base_type="Q4_0"), ram_mib=100.0, file_bytes=1, kld=kld, tg=s)


@pytest.mark.parametrize(
    ("tg", "verdict"),
    [((10.0, 9.0, 11.0), "pass"), ((8.2, 7.5, 8.9), "marginal"), ((7.0, 6.5, 7.5), "fail")],
)
def test_speed_is_judged_by_its_interval_not_its_mean(tg: tuple[float, float, float], verdict: str) -> None:
    """A mean above the target with an interval reaching below it is marginal, not a pass."""
    r = _row(tg=tg)
    judge(r, Targets(min_tg=8.0))
    assert r.verdict == verdict
    assert bool(r.misses) == (verdict != "pass")


def test_kld_interval() -> None:
    ok, straddles, bad = _row(kld=(0.01, 0.002)), _row(kld=(0.049, 0.002)), _row(kld=(0.06, 0.002))
    for r in (ok, straddles, bad):
        judge(r, Targets(max_kld=0.05))
    assert (ok.verdict, straddles.verdict, bad.verdict) == ("pass", "marginal", "fail")


def test_an_infinite_interval_never_passes() -> None:
    """One process gives an infinitely wide interval: it cannot clear a target."""
    r = _row(tg=(50.0, -math.inf, math.inf))
    judge(r, Targets(min_tg=1.0))
    assert r.verdict == "marginal"


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_f16_source(tmp_path_factory.mktemp("target") / "dense.gguf", "dense")


def _evaluator(runtime: Runtime, src: Path, tmp: Path) -> Evaluator:
    text = tmp / "t.txt"
    text.write_text(load_text())
    return Evaluator(runtime, src, tmp / "work", text, ctx=256, n_layer=3)


def test_cheapest_that_passes_wins(runtime: Runtime, dense: Path, tmp_path: Path) -> None:
    info = read_model_info(dense)
    cands = [uniform("Q8_0"), uniform("Q4_0"), keep_source(dense)]
    ev = _evaluator(runtime, dense, tmp_path)
    chosen, rows = run_target(ev, info, cands, RuntimeConfig(ctx=512), Targets(max_kld=5.0))
    assert chosen is not None and chosen.kld is not None
    assert chosen is rows[0] and chosen.recipe.name == "uniform-q4_0"  # the least RAM, tried first
    assert [r.ram_mib for r in rows] == sorted(r.ram_mib for r in rows)
    assert rows[1].kld is None  # the dearer ones were never quantized


def test_nothing_passes_names_the_closest_and_the_miss(
    runtime: Runtime, dense: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = read_model_info(dense)
    ev = _evaluator(runtime, dense, tmp_path)
    chosen, rows = run_target(
        ev,
        info,
        [uniform("Q4_0"), keep_source(dense)],
        RuntimeConfig(ctx=512),
        Targets(min_tg=1e9),
        processes=2,
    )
    assert chosen is None
    assert all(r.verdict == "fail" for r in rows)
    assert all(r.tg is not None and r.tg.n == 2 * 3 and math.isfinite(r.tg.ci_high) for r in rows)
    assert "tg" in rows[0].misses[0] and "≥ 1000000000" in rows[0].misses[0]
    r = cli(monkeypatch, "quant", "target", str(dense), "--ctx", "512")
    assert "give at least one" in r.error_line()
