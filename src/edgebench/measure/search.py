"""Which points of the space to measure: the full grid, or an adaptive coordinate descent.

Adaptive search runs one descent per test kind, over the dimensions that can change that test:
ubatch only moves prefill (decode goes one token at a time), so tg never sweeps it. Each
descent tries every value of one dimension with the others held (flash attention and KV type
count as one joint dimension, since quantized V needs flash attention), moves only when the
candidate is better beyond noise (its CI above the incumbent's mean), and repeats while it moved.
A FA × KV combination llama.cpp refused once is not tried again for another test or thread count.
Then, per test kind, the best few are raced interleaved (measure.race) unless racing is off: the
race's winner is the decision, and extra depths are measured for the winners only (the depth curve).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgebench.measure.race import RaceOutcome, RaceRound, RaceSettings, finalists, run_race
from edgebench.measure.space import Point, SweepSpace
from edgebench.measure.throughput import PointMeasurer, ThroughputResult
from edgebench.runtime.flags import BenchTest

__all__ = ["Best", "SweepOutcome", "best_of", "plan_size", "run_search"]

Search = Literal["adaptive", "grid"]
# Flash attention and KV type move together: a quantized V cache needs flash attention, so one
# at a time the descent cannot walk from f16/fa-off to q8_0/fa-on (measured: a 6 % tg miss).
_DIMS_PP = ("threads", "fa+kv", "ubatch", "cpus")
_DIMS_TG = ("threads", "fa+kv", "cpus")
MAX_PASSES = 3


class Best(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    result: ThroughputResult
    tied_with: list[str]  # labels of configs whose CI overlaps the winner's (ties are declared)
    race: RaceOutcome | None = None  # the interleaved race that decided it (None: the search alone)


class SweepOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    search: Search
    results: list[ThroughputResult]
    best_pp: Best | None
    best_tg: Best | None
    grid_size: int  # points × tests the full grid would measure
    measured: int  # points × tests this search visited

    @property
    def best_threads_pp(self) -> int | None:
        return self.best_pp.result.config.threads if self.best_pp else None

    @property
    def best_threads_tg(self) -> int | None:
        return self.best_tg.result.config.threads if self.best_tg else None


def _beats(c: ThroughputResult, inc: ThroughputResult | None) -> bool:
    if not c.ok or c.mean_ts is None:
        return False
    if inc is None or not inc.ok or inc.mean_ts is None:
        return True
    # Move only when clearly better: the candidate's lower CI bound above the incumbent's mean.
    lo = c.ci_low if c.ci_low is not None else c.mean_ts
    return lo > inc.mean_ts


def best_of(results: list[ThroughputResult], kind: str, depth: int) -> Best | None:
    pool = [r for r in results if r.kind == kind and r.depth == depth and r.ok and r.mean_ts is not None]
    if not pool:
        return None
    win = max(pool, key=lambda r: r.mean_ts or 0.0)
    lo = win.ci_low if win.ci_low is not None else win.mean_ts or 0.0
    tied = [r.config.label() for r in pool if r is not win and r.ci_high is not None and r.ci_high >= lo]
    return Best(kind=kind, result=win, tied_with=tied)


def decided(results: list[ThroughputResult], race: RaceOutcome) -> Best | None:
    """The race's winner as a Best: its search row, tied with what the race left tied."""
    row = next(
        (
            r
            for r in results
            if r.point == race.winner and r.test == race.test and r.depth == race.depth and r.ok
        ),
        None,
    )
    if row is None:
        return None
    return Best(kind=race.kind, result=row, tied_with=race.tied, race=race)


def _descend(
    space: SweepSpace,
    dims: tuple[str, ...],
    start: Point,
    test: BenchTest,
    measure: Callable[[Point, BenchTest], ThroughputResult],
    refused: Callable[[Point], bool],
) -> None:
    values: dict[str, list[Any]] = {
        "threads": space.threads,
        "fa": space.fa,
        "kv": space.kv,
        "ubatch": space.ubatch,
        "cpus": space.cpus,
        "fa+kv": [(f, k) for f in space.fa for k in space.kv],
    }
    best = start
    best_res = measure(start, test)
    for _ in range(MAX_PASSES):
        moved = False
        for dim in dims:
            for v in values[dim]:
                update = {"fa": v[0], "kv": v[1]} if dim == "fa+kv" else {dim: v}
                cand = best.model_copy(update=update)
                if cand == best or (cand.cpus.cpus is not None and cand.threads > len(cand.cpus.cpus)):
                    continue
                if refused(cand):
                    continue
                res = measure(cand, test)
                if _beats(res, best_res):
                    best, best_res, moved = cand, res, True
        if not moved:
            break


def _start(space: SweepSpace) -> Point:
    """Where users start: most threads that fit, f16 KV, flash attention on, default ubatch."""
    cpus = space.cpus[0]
    fitting = [t for t in space.threads if cpus.cpus is None or t <= len(cpus.cpus)] or space.threads
    fa = "on" if "on" in space.fa else space.fa[0]
    kv = "f16" if "f16" in space.kv else space.kv[0]
    ub = 512 if 512 in space.ubatch else space.ubatch[-1]
    return Point(threads=max(fitting), kv=kv, fa=fa, ubatch=ub, cpus=cpus)


def plan_size(space: SweepSpace, search: Search, race: RaceSettings | None = None) -> int:
    """Runs (and race rounds) the search will make at most, roughly (for the progress bar's ETA)."""
    rounds = 2 * race.min_rounds if race is not None else 0  # a race stops at min_rounds at best
    deep = len(space.depth_kinds) * (len(space.depth) - 1)
    grid = space.size() * (2 + deep)
    if search == "grid":
        return grid + rounds
    per_pass = len(space.threads) + len(space.fa) * len(space.kv) + len(space.cpus) - 2
    return min(grid, 2 * per_pass + len(space.ubatch) - 1 + deep) + rounds


def run_search(
    space: SweepSpace,
    measurer: PointMeasurer,
    search: Search,
    race: RaceSettings | None = None,
    *,
    on_round: Callable[[RaceRound], None] | None = None,
) -> SweepOutcome:
    seen: dict[tuple[Point, BenchTest], ThroughputResult] = {}
    # With a race after it, the descent screens: each point at `min_processes` processes of the
    # race's repetitions, and no more, since the race measures its finalists again, interleaved,
    # and decides. (bench/adaptive: on this noisy host the ±3 % CI target was seldom met, most
    # points ran the 5 processes max_reps allows, and the race still decided ties. The process
    # carries the noise, not the repetition: pp512 between-process CV 6.0 %, within 2.0 %.)
    screen_reps = race.reps if search == "adaptive" and race is not None else None

    def measure(p: Point, t: BenchTest, *, full: bool = False) -> ThroughputResult:
        if (p, t) not in seen:
            seen[(p, t)] = measurer.measure(p, t, screen_reps=None if full else screen_reps)
        return seen[(p, t)]

    def refused(p: Point) -> bool:
        # llama.cpp already said this FA × KV combination cannot run (quantized V needs FA): it
        # will not run for the other test kind or thread count either, so the descent skips it.
        return any(
            r.status == "unsupported" and (r.point.fa, r.point.kv) == (p.fa, p.kv) for r in seen.values()
        )

    d0 = space.depth[0]
    pp0, tg0 = space.tests(d0)
    default = _start(space)  # the untuned config: the descent starts there and it always races
    if search == "grid":
        for p in space.points():
            measure(p, pp0)
            measure(p, tg0)
    else:
        _descend(space, _DIMS_TG, default, tg0, measure, refused)
        _descend(space, _DIMS_PP, default, pp0, measure, refused)
    results0 = list(seen.values())
    best: dict[str, Best | None] = {}
    for kind in ("pp", "tg"):
        b = best_of(results0, kind, d0)
        if b is not None and race is not None:
            rows, not_raced = finalists(results0, kind, d0, race, default)
            outcome = run_race(
                measurer,
                rows,
                not_raced,
                race,
                search_pick=b.result.config.label(),
                on_round=on_round,
                default=default,
            )
            b = decided(results0, outcome) or b
        best[kind] = b
    for d in space.depth[1:]:
        pp, tg = space.tests(d)
        deep = [(kind, test) for kind, test in (("pp", pp), ("tg", tg)) if kind in space.depth_kinds]
        if search == "grid":
            for p in space.points():
                for _, test in deep:
                    measure(p, test)
            continue
        for kind, test in deep:
            if (b := best[kind]) is not None:
                measure(b.result.point, test, full=True)  # the depth curve is not raced
    results = list(seen.values())
    return SweepOutcome(
        model=measurer.model.name,
        search=search,
        results=results,
        best_pp=best["pp"],
        best_tg=best["tg"],
        grid_size=space.size() * (2 + len(space.depth_kinds) * (len(space.depth) - 1)),
        measured=len(results),
    )
