"""Composite ranking with 95 % CIs, tie groups and a quality × latency × RAM Pareto front.

Composite (seed 001): ``weighted quality × max(0.1, 60 / mean latency in seconds)``, with the
weighted quality as `SuiteScore.weighted` (a 0-1 weighted pass rate, so this is seed 001's score
divided by the suite's total weight).

CI propagation is **interval arithmetic**: the composite rises with quality and falls with
latency, so its interval is ``[q_low × f(lat_high), q_high × f(lat_low)]`` from the quality
bootstrap CI and the Student-t 95 % CI of the mean latency. That is conservative (the box of two
95 % intervals maps onto a wider interval than a joint 95 % one would), which errs on the side of
declaring ties. Rows are ranked in tie groups: the connected components of overlapping composite
CIs, so every member of a group lies beyond noise above every member of the groups below it and
nothing inside a group is ordered by noise.
"""

from __future__ import annotations

import math
from collections import Counter

from pydantic import BaseModel, ConfigDict

from edgebench.config import BudgetConfig
from edgebench.decide.evidence import ModelEvidence

__all__ = [
    "SPEED_FLOOR",
    "SPEED_REF_S",
    "Measures",
    "ParetoPoint",
    "RankRow",
    "Ranking",
    "TieGroup",
    "Unranked",
    "measures",
    "overlap",
    "rank",
    "speed_factor",
]

SPEED_REF_S = 60.0  # seed 001: 60 / wall seconds
SPEED_FLOOR = 0.1  # seed 001: a very slow model still scores a tenth of its quality
_MIN_LATENCY_S = 1e-3  # a t-interval reaching 0 s is clamped here (the composite then ties widely)


class Measures(BaseModel):
    """What the rules read for one model, each figure with its CI and, for RAM, where it came from."""

    model_config = ConfigDict(frozen=True)

    name: str
    backend: str
    size: float | None  # parameters, else file bytes: only ever compared like with like
    size_kind: str | None  # "params" | "file"
    suite: str | None
    quality: float | None
    quality_low: float | None
    quality_high: float | None
    latency_s: float | None
    latency_low: float | None
    latency_high: float | None
    ram_mib: float | None
    ram_source: str  # "measured: …" / "predicted: …" / "not measured"
    ram_predicted: bool
    tg: float | None
    tg_low: float | None
    tg_high: float | None


class RankRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    position: int  # tie group, 1 = best; rows sharing a position are tied
    name: str
    backend: str
    quality: float
    quality_low: float
    quality_high: float
    latency_s: float
    latency_low: float
    latency_high: float
    speed_factor: float
    composite: float
    composite_low: float
    composite_high: float
    tied_with: list[str]
    because: str


class TieGroup(BaseModel):
    model_config = ConfigDict(frozen=True)

    position: int
    members: list[str]
    low: float  # the union of the members' composite CIs
    high: float
    because: str


class ParetoPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    quality: float
    latency_s: float
    ram_mib: float | None
    ram_source: str
    on_front: bool
    dominated_by: list[str]
    because: str


class Unranked(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    because: str


class Ranking(BaseModel):
    model_config = ConfigDict(frozen=True)

    suite: str | None  # the one suite whose scores are compared
    method: str
    rows: list[RankRow]
    groups: list[TieGroup]
    pareto: list[ParetoPoint]
    unranked: list[Unranked]


def speed_factor(latency_s: float) -> float:
    return max(SPEED_FLOOR, SPEED_REF_S / max(latency_s, _MIN_LATENCY_S))


def overlap(a_low: float, a_high: float, b_low: float, b_high: float) -> bool:
    return a_low <= b_high and b_low <= a_high


def _latency_ci(mean: float, sd: float, n: int) -> tuple[float, float]:
    from scipy import stats as sps  # lazy: scipy costs ~1 s of imports at start-up

    if n < 2 or sd <= 0:
        return mean, mean  # no spread known: the point is all we have
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return max(_MIN_LATENCY_S, mean - half), mean + half


def _ram(e: ModelEvidence) -> tuple[float | None, str, bool]:
    """Host RAM for the fit and Pareto rules: measured where it exists, else the planner's prediction."""
    c = e.context
    if c is not None and c.host_total_mib is not None:
        return c.host_total_mib, f"measured: peak RSS at ctx {c.stable_ctx}", False
    if e.server_check is not None and e.server_check.status == "ok" and e.server_check.peak_rss_mib > 0:
        return e.server_check.peak_rss_mib, "measured: llama-server peak RSS (cross-check)", False
    if e.predicted_memory is not None:
        p = e.predicted_memory
        return p.host_total_mib, f"predicted: memory planner at ctx {p.ctx}", True
    ok = [t.peak_rss_mib for t in e.throughput if t.ok and t.peak_rss_mib > 0]
    if ok:
        return max(ok), "measured: llama-bench peak RSS", False
    return None, "not measured", False


def measures(e: ModelEvidence) -> Measures:
    q = e.quality
    lat = None if q is None else _latency_ci(q.mean_latency_s, q.latency_sd_s, q.runs)
    tg = e.best_tg if e.best_tg is not None and e.best_tg.ok else None
    ram, source, predicted = _ram(e)
    size: float | None
    if e.params:
        size, kind = float(e.params), "params"
    elif e.file_size:
        size, kind = float(e.file_size), "file"
    else:
        size, kind = None, None
    return Measures(
        name=e.name,
        backend=e.backend,
        size=size,
        size_kind=kind,
        suite=q.suite if q else None,
        quality=q.weighted if q else None,
        quality_low=q.weighted_low if q else None,
        quality_high=q.weighted_high if q else None,
        latency_s=q.mean_latency_s if q else None,
        latency_low=lat[0] if lat else None,
        latency_high=lat[1] if lat else None,
        ram_mib=ram,
        ram_source=source,
        ram_predicted=predicted,
        tg=tg.mean_ts if tg else None,
        tg_low=(tg.ci_low if tg.ci_low is not None else tg.mean_ts) if tg else None,
        tg_high=(tg.ci_high if tg.ci_high is not None else tg.mean_ts) if tg else None,
    )


def _chosen_suite(evidence: list[ModelEvidence]) -> str | None:
    # Scores from different suites are not comparable; rank the suite most models ran.
    counts = Counter(e.quality.suite for e in evidence if e.quality is not None)
    if not counts:
        return None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _groups(rows: list[tuple[Measures, float, float, float]]) -> list[list[int]]:
    """Connected components of overlapping composite CIs, best first (indices into rows)."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i][3])  # by CI high, descending
    groups: list[list[int]] = []
    floor = math.inf
    for i in order:
        _, _, low, high = rows[i]
        if groups and high >= floor:
            groups[-1].append(i)
        else:
            groups.append([i])
            floor = low
        floor = min(floor, low)
    return [sorted(g, key=lambda i: -rows[i][1]) for g in groups]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def rank(evidence: list[ModelEvidence], budgets: BudgetConfig) -> Ranking:
    suite = _chosen_suite(evidence)
    ms = [measures(e) for e in evidence]
    scored: list[tuple[Measures, float, float, float]] = []
    unranked: list[Unranked] = []
    for m in ms:
        if m.quality is None or m.latency_s is None:
            unranked.append(Unranked(name=m.name, because="quality not measured: not ranked"))
        elif m.suite != suite:
            unranked.append(
                Unranked(
                    name=m.name,
                    because=f"scored on suite {m.suite!r}, the ranking compares {suite!r}: "
                    "scores from different suites are not comparable",
                )
            )
        else:
            assert m.quality_low is not None and m.quality_high is not None
            assert m.latency_low is not None and m.latency_high is not None
            comp = m.quality * speed_factor(m.latency_s)
            low = m.quality_low * speed_factor(m.latency_high)
            high = m.quality_high * speed_factor(m.latency_low)
            scored.append((m, comp, low, high))

    rows: list[RankRow] = []
    groups: list[TieGroup] = []
    for pos, idx in enumerate(_groups(scored), start=1):
        names = [scored[i][0].name for i in idx]
        g_low, g_high = min(scored[i][2] for i in idx), max(scored[i][3] for i in idx)
        if len(idx) > 1:
            g_because = f"composite CIs overlap (directly or through each other): tied at position {pos}"
        else:
            g_because = f"composite CI [{_fmt(g_low)}, {_fmt(g_high)}] clear of every other model's"
        groups.append(TieGroup(position=pos, members=names, low=g_low, high=g_high, because=g_because))
        for i in idx:
            m, comp, low, high = scored[i]
            assert m.quality is not None and m.latency_s is not None
            assert m.quality_low is not None and m.quality_high is not None
            assert m.latency_low is not None and m.latency_high is not None
            tied = [n for n in names if n != m.name]
            because = (
                f"composite {_fmt(comp)} [{_fmt(low)}, {_fmt(high)}] = quality {m.quality:.2f} "
                f"[{m.quality_low:.2f}, {m.quality_high:.2f}] × max(0.1, 60 / {m.latency_s:.1f} s)"
            )
            because += f"; tied with {', '.join(tied)} (CIs overlap)" if tied else "; no tie"
            rows.append(
                RankRow(
                    position=pos,
                    name=m.name,
                    backend=m.backend,
                    quality=m.quality,
                    quality_low=m.quality_low,
                    quality_high=m.quality_high,
                    latency_s=m.latency_s,
                    latency_low=m.latency_low,
                    latency_high=m.latency_high,
                    speed_factor=speed_factor(m.latency_s),
                    composite=comp,
                    composite_low=low,
                    composite_high=high,
                    tied_with=tied,
                    because=because,
                )
            )
    return Ranking(
        suite=suite,
        method="composite = weighted quality × max(0.1, 60 / mean latency s); 95 % CI by interval "
        "arithmetic over the quality bootstrap CI and the Student-t CI of the mean latency; "
        "ties = connected components of overlapping CIs",
        rows=rows,
        groups=groups,
        pareto=pareto([s[0] for s in scored], budgets.ram_tie_frac),
        unranked=unranked,
    )


# ------------------------------------------------------------------------------------------ Pareto


def _axes(a: Measures, b: Measures, ram_tie: float) -> tuple[list[str], list[str], list[str]]:
    """(axes where a is better beyond noise, axes where a is worse at all, axes compared)."""
    assert a.quality is not None and b.quality is not None
    assert a.latency_s is not None and b.latency_s is not None
    assert a.quality_low is not None and b.quality_high is not None
    assert a.latency_high is not None and b.latency_low is not None
    better, worse, compared = [], [], ["quality", "latency"]
    if a.quality < b.quality:
        worse.append("quality")
    elif a.quality_low > b.quality_high:
        better.append(f"quality {a.quality:.2f} vs {b.quality:.2f}")
    if a.latency_s > b.latency_s:
        worse.append("latency")
    elif a.latency_high < b.latency_low:
        better.append(f"latency {a.latency_s:.1f} s vs {b.latency_s:.1f} s")
    if a.ram_mib is not None and b.ram_mib is not None:
        compared.append("RAM")
        if a.ram_mib > b.ram_mib * (1 + ram_tie):
            worse.append("RAM")
        elif a.ram_mib < b.ram_mib * (1 - ram_tie):
            better.append(f"RAM {a.ram_mib:.0f} vs {b.ram_mib:.0f} MiB")
    return better, worse, compared


def pareto(ms: list[Measures], ram_tie_frac: float = 0.05) -> list[ParetoPoint]:
    """A dominates B when A is no worse on any axis and better *beyond noise* on at least one.

    Axes: quality ↑ and latency ↓ ("no worse" = point estimate at least as good; "beyond noise" =
    the CIs do not overlap), host RAM ↓ (a single peak-RSS figure has no CI: within `ram_tie_frac`
    counts as equal, further apart as better). RAM is compared only when both models have a
    figure, so a missing measurement never makes a model look dominated. Point-estimate wins
    alone never dominate: that would be ranking by noise.
    """
    out: list[ParetoPoint] = []
    for b in ms:
        assert b.quality is not None and b.latency_s is not None
        by: list[str] = []
        reasons: list[str] = []
        for a in ms:
            if a is b:
                continue
            better, worse, compared = _axes(a, b, ram_tie_frac)
            if better and not worse:
                by.append(a.name)
                unram = "" if "RAM" in compared else "; RAM not compared: not measured for both"
                reasons.append(f"{a.name} ({'; '.join(better)}; no worse elsewhere{unram})")
        if by:
            because = "dominated by " + ", ".join(reasons)
        else:
            because = (
                "on the front: no other model is at least as good on quality, latency and RAM and "
                "better beyond noise on one of them"
            )
        out.append(
            ParetoPoint(
                name=b.name,
                quality=b.quality,
                latency_s=b.latency_s,
                ram_mib=b.ram_mib,
                ram_source=b.ram_source,
                on_front=not by,
                dominated_by=by,
                because=because,
            )
        )
    return out
