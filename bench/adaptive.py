"""bench/adaptive: adaptive search vs the full grid over the same space on gemma-3-270m.

Space: threads 1,2 × kv f16,q8_0,q4_0 × fa on,off × ubatch 128,512 (24 points, pp512 + tg128).
Goals: wall-time ratio adaptive/grid ≤ 0.35; the config adaptive chose reaches ≥ 0.98 × the grid's
best tg, both read from the grid's own measurements (so one session's noise is compared with itself).
Usage: python bench/adaptive.py
"""

from __future__ import annotations

import statistics
import time

from _common import fresh_store, setup

from edgebench.config import SweepConfig
from edgebench.measure.search import run_search
from edgebench.measure.space import Point, default_space
from edgebench.measure.throughput import MeasureSettings, PointMeasurer, ThroughputResult


def main() -> None:
    runtime, host, model = setup()
    space = default_space(
        host,
        SweepConfig(),
        threads=[1, 2],
        kv=["f16", "q8_0", "q4_0"],
        fa=["on", "off"],
        ubatch=[128, 512],
        cpus=["all"],
    )
    settings = MeasureSettings()
    timings = {}
    outcomes = {}
    for mode in ("adaptive", "grid"):
        t0 = time.monotonic()
        outcomes[mode] = run_search(space, PointMeasurer(fresh_store(), runtime, host, model, settings), mode)
        timings[mode] = time.monotonic() - t0
    grid, ada = outcomes["grid"], outcomes["adaptive"]
    assert grid.best_tg is not None and ada.best_tg is not None
    grid_tg = {r.point: r.mean_ts for r in grid.results if r.kind == "tg" and r.ok}
    chosen = ada.best_tg.result.point
    chosen_in_grid = grid_tg.get(chosen) or 0.0  # the grid measured every point, this one too
    best = grid.best_tg.result.mean_ts or 0.0
    wall = timings["adaptive"] / timings["grid"]
    quality = chosen_in_grid / best if best else 0.0
    print(f"adaptive vs grid on {model.name}, {space.size()} points × 2 tests, build {runtime.build_id}")
    g_tg, a_tg = grid.best_tg.result, ada.best_tg.result
    g_pp = grid.best_pp.result.config.label() if grid.best_pp else "-"
    print(
        f"grid:     {grid.measured:3d} runs, {timings['grid']:7.1f} s, best tg {g_tg.config.label()}"
        f" = {best:.2f} t/s; best pp {g_pp}"
    )
    print(
        f"adaptive: {ada.measured:3d} runs, {timings['adaptive']:7.1f} s, chose tg {a_tg.config.label()}"
        f" (its own figure {a_tg.mean_ts or 0:.2f} t/s, the grid's {chosen_in_grid:.2f} t/s)"
    )
    print(f"wall-time ratio {wall:.3f} (goal ≤ 0.35): {'PASS' if wall <= 0.35 else 'FAIL'}")
    print(f"chosen tg / grid best {quality:.3f} (goal ≥ 0.98): {'PASS' if quality >= 0.98 else 'FAIL'}")
    _noise(grid.results, chosen, grid.best_tg.result)


def _noise(results: list[ThroughputResult], chosen: Point, best: ThroughputResult) -> None:
    """How far the grid's own figures can be trusted: its CIs, and an A/A inside the grid.

    tg never reads ubatch, so the grid measures every tg config once per ubatch value: the same
    command run twice, minutes apart."""
    tg = [r for r in results if r.kind == "tg" and r.ok]
    mine = next((r for r in tg if r.point == chosen), None)
    for label, r in (("grid best", best), ("chosen, in the grid", mine)):
        if r is not None:
            ci = f"[{r.ci_low or 0:.2f}, {r.ci_high or 0:.2f}]"
            print(f"  {label:20} {r.config.label():34} {r.mean_ts or 0:6.2f} t/s, 95 % CI {ci}")
    if mine is not None and mine.ci_high is not None and best.ci_low is not None:
        tie = mine.ci_high >= best.ci_low
        print(f"  chosen vs grid best: {'a tie within the grid CIs' if tie else 'worse beyond the grid CIs'}")
    pairs: dict[Point, list[float]] = {}
    for r in tg:
        pairs.setdefault(r.point.model_copy(update={"ubatch": 0}), []).append(r.mean_ts or 0.0)
    gaps = [abs(a - b) / max(a, b) for a, b in (v for v in pairs.values() if len(v) == 2)]
    if gaps:
        print(
            f"  grid A/A (the same tg config measured twice): {len(gaps)} pairs, median gap "
            f"{statistics.median(gaps):.1%}, max {max(gaps):.1%}"
        )


if __name__ == "__main__":
    main()
