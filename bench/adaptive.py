"""bench/adaptive: adaptive search (with its finalists' race) vs the full grid on gemma-3-270m.

Space: threads 1,2 × kv f16,q8_0,q4_0 × fa on,off × ubatch 128,512 (24 points, pp512 + tg128).
Goals: wall-time ratio adaptive (search + race) / grid ≤ 0.35; the tg config adaptive chose is within
the paired CI of the grid's best tg (or ≥ 0.98 of it). That last comparison is a final interleaved
race of the two (measure/race.py), not two figures measured minutes apart.
Three adaptive runs are judged against one grid (measured after the first of them): the grid is
the expensive reference, and the goal is about the adaptive search being right every time.
Usage: python bench/adaptive.py [--rounds 6] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import fresh_store, setup

from edgebench.config import SweepConfig
from edgebench.host.probe import HostInfo
from edgebench.measure.race import RaceOutcome, RaceSettings, run_race
from edgebench.measure.search import Search, SweepOutcome, run_search
from edgebench.measure.space import Point, default_space
from edgebench.measure.throughput import MeasureSettings, PointMeasurer, ThroughputResult
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.locate import Runtime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the final race (it never stops early)")
    ap.add_argument("--runs", type=int, default=3, help="adaptive runs, each judged against the one grid")
    args = ap.parse_args()
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
    race = RaceSettings()

    def timed(mode: Search) -> tuple[SweepOutcome, float]:
        t0 = time.monotonic()
        m = PointMeasurer(fresh_store(), runtime, host, model, settings)
        # The grid is the reference: every point measured, its best by mean, no race on top.
        out = run_search(space, m, mode, race if mode == "adaptive" else None)
        return out, time.monotonic() - t0

    # The grid (~20 min here) is measured once, between the first adaptive run and the others, so
    # no run is always measured before or after it; each adaptive run is judged against it.
    ada_runs = [timed("adaptive")]
    grid, grid_s = timed("grid")
    ada_runs += [timed("adaptive") for _ in range(args.runs - 1)]
    assert grid.best_tg is not None
    g_tg = grid.best_tg.result
    best = g_tg.mean_ts or 0.0
    grid_tg = {r.point: r.mean_ts for r in grid.results if r.kind == "tg" and r.ok}
    print(f"adaptive vs grid on {model.name}, {space.size()} points × 2 tests, build {runtime.build_id}")
    g_pp = grid.best_pp.result.config.label() if grid.best_pp else "-"
    print(
        f"grid:     {grid.measured:3d} runs, {grid_s:7.1f} s, best tg {g_tg.config.label()}"
        f" = {best:.2f} t/s; best pp {g_pp}"
    )
    verdicts = []
    for i, (ada, ada_s) in enumerate(ada_runs, 1):
        assert ada.best_tg is not None
        a_tg = ada.best_tg.result
        chosen_in_grid = grid_tg.get(a_tg.point) or 0.0  # the grid measured every point, this one too
        wall = ada_s / grid_s
        print(f"\n--- adaptive run {i}")
        print(
            f"adaptive: {ada.measured:3d} runs, {ada_s:7.1f} s, chose tg {a_tg.config.label()}"
            f" (its own figure {a_tg.mean_ts or 0:.2f} t/s, the grid's {chosen_in_grid:.2f} t/s)"
        )
        print(f"wall-time ratio {wall:.3f} (goal ≤ 0.35): {'PASS' if wall <= 0.35 else 'FAIL'}")
        if best:
            print(
                f"chosen tg / grid best, the grid's own figures {chosen_in_grid / best:.3f} (not the verdict)"
            )
        if ada.best_tg.race is not None:
            _race_evidence("adaptive's tg race", ada.best_tg.race)
        if ada.best_pp is not None and ada.best_pp.race is not None:
            _race_evidence("adaptive's pp race", ada.best_pp.race)
        _noise(grid.results, a_tg.point, g_tg)
        ok = _final(runtime, host, model, settings, g_tg, a_tg, args.rounds)
        verdicts.append((wall, ok))
    print(
        "\nsummary: "
        + "; ".join(
            f"run {i}: wall {w:.3f}, choice {'PASS' if ok else 'FAIL'}"
            for i, (w, ok) in enumerate(verdicts, 1)
        )
    )
    passed = all(w <= 0.35 and ok for w, ok in verdicts)
    print(f"{len(verdicts)} consecutive runs: {'PASS' if passed else 'FAIL'}")


def _final(
    runtime: Runtime,
    host: HostInfo,
    model: ModelInfo,
    settings: MeasureSettings,
    g_tg: ThroughputResult,
    a_tg: ThroughputResult,
    rounds: int,
) -> bool:
    """The verdict: the chosen and the grid's best tg config raced interleaved, every round run
    (no early stop), paired: chosen within the paired CI of the grid best, or ≥ 0.98 of it."""
    if a_tg.point == g_tg.point:
        print("final: adaptive chose the grid's best tg config itself: PASS")
        return True
    final = run_race(
        PointMeasurer(fresh_store(), runtime, host, model, settings),
        [g_tg, a_tg],
        [],
        RaceSettings(min_rounds=rounds, max_rounds=rounds, size=2),
        search_pick=g_tg.config.label(),
    )
    _race_evidence("final race, grid best vs chosen", final)
    (c,) = final.comparisons  # winner − the other
    sign = 1.0 if c.a == a_tg.config.label() else -1.0  # as chosen − grid best
    g_mean = final.race_means.get(g_tg.config.label(), 0.0)
    a_mean = final.race_means.get(a_tg.config.label(), 0.0)
    ratio = a_mean / g_mean if g_mean else 0.0
    bounds = [sign * x for x in (c.ci_low, c.ci_high) if x is not None]
    ok_ci = len(bounds) == 2 and max(bounds) >= 0  # chosen − grid best: its CI reaches 0 or above
    if bounds:
        print(f"  chosen − grid best: paired 95 % CI [{min(bounds):+.2f}, {max(bounds):+.2f}] t/s")
    ok = ok_ci or ratio >= 0.98
    print(
        f"final: chosen / grid best {ratio:.3f} over {final.rounds} paired rounds; "
        f"within the paired CI: {'yes' if ok_ci else 'no'} (goal: within it, or ≥ 0.98): "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


def _race_evidence(title: str, race: RaceOutcome) -> None:
    print(f"  {title}: {race.decision} after {race.rounds} rounds: {race.rule}")
    if race.not_raced:
        print(f"    close but not raced (cap): {', '.join(race.not_raced)}")
    if race.default is not None:
        print(f"    the untuned default: {race.default}: {race.default_fate() or 'the pick'}")
    for label, mean in race.race_means.items():
        print(f"    {label:40} race mean {mean:7.2f} t/s")
    for c in race.comparisons:
        if c.mean_diff is None:
            print(f"    {c.a} vs {c.b}: no comparable rounds")
            continue
        ci = (
            f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
            if c.ci_low is not None and c.ci_high is not None
            else "n/a"
        )
        rel = f"{c.rel_diff:+.1%}" if c.rel_diff is not None else "n/a"
        print(
            f"    {c.a} − {c.b}: {c.mean_diff:+.2f} t/s ({rel}), 95 % CI {ci}, {c.rounds} pairs, {c.verdict}"
        )


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
