"""Racing the finalists: the search's best few configs measured interleaved, decided by paired rounds.

The search measures each config in its own minutes, and two measurements of one config minutes
apart can differ by more than either's CI (another tenant's load ends, a board heats up), so the
config measured in the better minute wins. The race removes the minute from the comparison:

- finalists are the search's best and the configs within noise or within `margin` of it (the
  between-minute drift the search cannot see), at most `size`, best first; and the untuned
  default (the search's start point: what the user runs without edgebench) whatever its figure,
  so the pick is never worse beyond noise than not tuning at all;
- a round runs one llama-bench process per finalist, back to back (A B C), alternating the order
  (A B C, then C B A) so a steady drift favours no position over two rounds;
- the evidence is the per-round paired difference (stats.paired_difference) — a pair shares its
  minute — and its 95 % t-interval over rounds;
- from `min_rounds`, after every second round, a finalist that another beats beyond noise (the
  difference's CI above 0) leaves the race; the last one left wins. After `max_rounds` the ones left
  are a declared tie, picked by the stated rule: fewer threads, then less memory (peak RSS within
  2 % counts as equal), then the untuned default (a change not shown to be better is not
  recommended), then the highest race mean;
- a pair where one process started throttled and the other cool (measure.gate) is not compared;
  processes that shared the cores their threads needed with other processes (host/busy.py) are
  counted and said: on a busy host that is the host's speed for that config, not a fluke.

Every round is a stored row (stage `race-round`, never mixed with the per-point `throughput`
rows) committed when the round ends, and the decision is stored too (stage `race`: what the
serving spec reads). A killed race resumes at the first round it had not finished; a round cut
in the middle is measured again whole, since its pairs must share the minute. Repeated looks at
the CI (up to max_rounds / 2 of them) make a 95 % interval a little less than 95 % sure: the
min_rounds floor and even-round looks keep that small, and a tie is the answer when unsure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgebench.measure.gate import GateCheck
from edgebench.measure.space import Point
from edgebench.measure.throughput import PointMeasurer, ThroughputResult
from edgebench.runtime.flags import BenchTest
from edgebench.runtime.proc import TRANSIENT, ExitCause
from edgebench.stats import paired_difference
from edgebench.store import result_key

__all__ = [
    "DECISION_STAGE",
    "DECISION_VERSION",
    "ROUND_STAGE",
    "ROUND_VERSION",
    "PairedComparison",
    "RaceEntry",
    "RaceOutcome",
    "RaceRound",
    "RaceSettings",
    "finalists",
    "run_race",
]

ROUND_STAGE = "race-round"
ROUND_VERSION = 1
DECISION_STAGE = "race"
DECISION_VERSION = 1
MEMORY_TIE = 0.02  # peak RSS within 2 %: the same memory for the tie rule (RSS varies a few MiB)


class RaceSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int = Field(default=3, ge=2)  # finalists at most
    # Also race configs this far below the best's mean: the search's figures come from different
    # minutes, and this VM moved 9 % between processes of one config.
    margin: float = Field(default=0.10, ge=0, lt=1)
    min_rounds: int = Field(default=4, ge=2)
    max_rounds: int = Field(default=8, ge=2)
    # Repetitions per process. The unit is the process: here two repetitions of one process
    # differed by a median 4.0 % and process means of one config by a CV of 5.3 %, so a second
    # repetition narrows a pair's difference little and costs ~40 % more time a process.
    reps: int = Field(default=1, ge=1)


class RaceEntry(BaseModel):
    """One finalist's process in one round."""

    model_config = ConfigDict(frozen=True)

    label: str
    point: Point
    status: str
    cause: str
    samples_ts: list[float]
    mean_ts: float | None
    peak_rss_mib: float
    wall_s: float
    gate: GateCheck

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.mean_ts is not None


class RaceRound(BaseModel):
    """One round of a race (stage `race-round`): every remaining finalist once, back to back."""

    model_config = ConfigDict(frozen=True)

    model: str
    model_sha256: str
    race_id: str
    kind: str
    test: str
    depth: int
    round: int  # 1-based
    entries: list[RaceEntry]  # in the order they ran
    build_id: str
    host_fingerprint: str
    measured_at: str

    def entry(self, label: str) -> RaceEntry | None:
        return next((e for e in self.entries if e.label == label), None)


class PairedComparison(BaseModel):
    """a − b over the rounds where both ran, ok, in the same thermal state."""

    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    rounds: int  # pairs compared
    excluded: int  # rounds where one failed or one was throttled and the other not
    mean_diff: float | None  # t/s
    ci_low: float | None
    ci_high: float | None
    rel_diff: float | None  # mean_diff / b's mean over the same rounds
    verdict: Literal["a better", "b better", "tie"]


class RaceOutcome(BaseModel):
    """The decision for one test kind and its evidence (stage `race`; also in the sweep report)."""

    model_config = ConfigDict(frozen=True)

    model: str
    model_sha256: str
    race_id: str
    kind: str
    test: str
    depth: int
    finalists: list[Point]  # best first, as the search ranked them
    labels: list[str]
    not_raced: list[str]  # within the margin but beyond `size`
    default: str | None = None  # the untuned default's label, when it raced
    search_pick: str  # what the search alone would have chosen
    rounds: int
    decision: Literal["winner", "tie", "sole"]
    winner: Point
    winner_label: str
    rule: str  # why the winner, in words
    comparisons: list[PairedComparison]  # the winner against every other finalist
    eliminated: dict[str, str]  # label → by whom / why, and in which round
    tied: list[str]  # the others left at the end of a tie
    race_means: dict[str, float]  # mean of each finalist's process means in the race (shown only)
    throttled_processes: int
    contended_processes: int = 0  # shared the cores their threads needed with other processes
    build_id: str
    host_fingerprint: str
    measured_at: str

    def default_fate(self) -> str | None:
        """What became of the untuned default, when it raced and did not win: out of the race and
        why, or tied and passed over by the tie rule."""
        if self.default is None or self.default == self.winner_label:
            return None
        if self.default in self.eliminated:
            return self.eliminated[self.default]
        if self.default in self.tied:
            return f"tied; the tie rule took {self.winner_label} (fewer threads or less memory)"
        return "not beaten beyond noise"


def finalists(
    results: list[ThroughputResult],
    kind: str,
    depth: int,
    st: RaceSettings,
    default: Point | None = None,
) -> tuple[list[ThroughputResult], list[str]]:
    """The best row of `kind` at `depth` and the ones close to it (CI overlap or within the
    margin), best first, capped at `size`, plus the `default` config's row if it ran and is not
    among them; and the labels of the close ones beyond the cap."""
    pool = sorted(
        (r for r in results if r.kind == kind and r.depth == depth and r.ok and r.mean_ts is not None),
        key=lambda r: -(r.mean_ts or 0.0),
    )
    if not pool:
        return [], []
    best = pool[0]
    top = best.mean_ts or 0.0
    lo = best.ci_low if best.ci_low is not None else top
    close = [best] + [
        r
        for r in pool[1:]
        if (r.ci_high is not None and r.ci_high >= lo) or (r.mean_ts or 0.0) >= (1 - st.margin) * top
    ]
    raced = close[: st.size]
    base = next((r for r in pool if r.point == default), None)
    if base is not None and base not in raced:
        raced.append(base)  # the screen measured it in another minute: it races whatever its figure
    return raced, [r.config.label() for r in close[st.size :] if r is not base]


def _race_id(test: BenchTest, points: list[Point], st: RaceSettings) -> str:
    ident = {
        "test": test.name,
        "depth": test.depth,
        "reps": st.reps,
        "finalists": [p.model_dump(mode="json") for p in points],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def compare(rounds: list[RaceRound], a: str, b: str) -> PairedComparison:
    xs: list[float] = []
    ys: list[float] = []
    excluded = 0
    for rd in rounds:
        ea, eb = rd.entry(a), rd.entry(b)
        if ea is None or eb is None:
            continue
        if not (ea.ok and eb.ok) or ea.gate.throttled != eb.gate.throttled:
            excluded += 1  # a throttled process is never compared with a cool one
            continue
        xs.append(ea.mean_ts or 0.0)
        ys.append(eb.mean_ts or 0.0)
    if not xs:
        return PairedComparison(
            a=a,
            b=b,
            rounds=0,
            excluded=excluded,
            mean_diff=None,
            ci_low=None,
            ci_high=None,
            rel_diff=None,
            verdict="tie",
        )
    s = paired_difference(xs, ys)
    finite = len(xs) > 1
    verdict: Literal["a better", "b better", "tie"] = "tie"
    if finite and s.ci_low > 0:
        verdict = "a better"
    elif finite and s.ci_high < 0:
        verdict = "b better"
    mean_b = sum(ys) / len(ys)
    return PairedComparison(
        a=a,
        b=b,
        rounds=len(xs),
        excluded=excluded,
        mean_diff=round(s.mean, 4),
        ci_low=round(s.ci_low, 4) if finite else None,
        ci_high=round(s.ci_high, 4) if finite else None,
        rel_diff=round(s.mean / mean_b, 5) if mean_b else None,
        verdict=verdict,
    )


def _tie_pick(
    left: list[str], rows: dict[str, ThroughputResult], rounds: list[RaceRound], default: str | None
) -> str:
    """Fewer threads, then less memory (peak RSS in the race, within 2 % = equal), then the untuned
    default, then the highest race mean (paired minutes, unlike the search's figures)."""
    fewest = min(rows[x].point.threads for x in left)
    cands = [x for x in left if rows[x].point.threads == fewest]

    def seen(label: str) -> list[RaceEntry]:
        return [e for rd in rounds if (e := rd.entry(label)) is not None and e.ok]

    def rss(label: str) -> float:
        es = seen(label)
        return sum(e.peak_rss_mib for e in es) / len(es) if es else rows[label].peak_rss_mib

    least = min(rss(x) for x in cands)
    cands = [x for x in cands if rss(x) <= least * (1 + MEMORY_TIE)]
    if default in cands:
        return default

    def race_mean(label: str) -> float:
        es = seen(label)
        return sum(e.mean_ts or 0.0 for e in es) / len(es) if es else 0.0

    return max(cands, key=race_mean)  # max keeps the first of equals: `left` is in search order


class _Race:
    def __init__(
        self,
        measurer: PointMeasurer,
        rows: list[ThroughputResult],
        st: RaceSettings,
        on_round: Callable[[RaceRound], None] | None,
        default: Point | None = None,
    ) -> None:
        self.m, self.st, self.on_round = measurer, st, on_round
        first = rows[0]
        self.test = BenchTest(n_prompt=first.n_prompt, n_gen=first.n_gen, depth=first.depth)
        self.rows = {r.config.label(): r for r in rows}
        self.labels = list(self.rows)
        self.default = next((r.config.label() for r in rows if r.point == default), None)
        self.race_id = _race_id(self.test, [r.point for r in rows], st)

    def _params(self, rnd: int) -> dict[str, object]:
        return {"race": self.race_id, "round": rnd, "test": self.test.name, "depth": self.test.depth}

    def round(self, rnd: int, active: list[str]) -> RaceRound:
        key, _ = result_key(ROUND_STAGE, self.m.prov, self._params(rnd))
        row = self.m.store.get(key)
        if row is not None and row.version == ROUND_VERSION:
            stored = RaceRound.model_validate(row.record)
            # the same remaining finalists, none of them cut short by our timeout or the environment
            if [e.label for e in stored.entries] == self._order(rnd, active) and not any(
                e.status in TRANSIENT for e in stored.entries
            ):
                return stored
        entries = [self._process(label) for label in self._order(rnd, active)]
        first = self.rows[self.labels[0]]
        rd = RaceRound(
            model=first.model,
            model_sha256=first.model_sha256,
            race_id=self.race_id,
            kind=first.kind,
            test=self.test.name,
            depth=self.test.depth,
            round=rnd,
            entries=entries,
            build_id=self.m.runtime.build_id,
            host_fingerprint=self.m.host.fingerprint,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.m.store.put(ROUND_STAGE, self.m.prov, self._params(rnd), rd, version=ROUND_VERSION)
        return rd

    def _order(self, rnd: int, active: list[str]) -> list[str]:
        return list(active) if rnd % 2 else list(reversed(active))

    def _process(self, label: str) -> RaceEntry:
        r = self.rows[label]
        out, gate = self.m.process(r.config, self.test, self.st.reps)
        samples = list(out.runs[0].samples_ts) if out.status is ExitCause.OK and out.runs else []
        return RaceEntry(
            label=label,
            point=r.point,
            status=out.status.value,
            cause=out.detail,
            samples_ts=samples,
            mean_ts=round(sum(samples) / len(samples), 4) if samples else None,
            peak_rss_mib=round(out.peak_rss_mib, 1),
            wall_s=round(out.wall_s, 2),
            gate=gate,
        )

    def run(self, search_pick: str, not_raced: list[str]) -> RaceOutcome:
        st = self.st
        active = list(self.labels)
        rounds: list[RaceRound] = []
        eliminated: dict[str, str] = {}
        decision: Literal["winner", "tie", "sole"] = "sole" if len(active) == 1 else "tie"
        rnd = 0
        while len(active) > 1 and rnd < st.max_rounds:
            rnd += 1
            rd = self.round(rnd, active)
            rounds.append(rd)
            if self.on_round:
                self.on_round(rd)
            for e in rd.entries:  # llama.cpp failing a finalist it ran before: out of the race
                if not e.ok and e.status not in TRANSIENT and e.label in active and len(active) > 1:
                    active.remove(e.label)
                    eliminated[e.label] = f"{e.status} in round {rnd}"
            if rnd < st.min_rounds or rnd % 2:
                continue  # look only after even rounds: order effects cancel over A B C + C B A
            beaten = {}
            for b in active:
                for a in active:
                    if a != b and compare(rounds, a, b).verdict == "a better":
                        beaten[b] = f"beaten by {a} beyond noise after round {rnd}"
                        break
            if len(beaten) < len(active):  # a cycle of "better" beyond noise: leave it a tie
                for b, why in beaten.items():
                    active.remove(b)
                    eliminated[b] = why
        if len(active) == 1 and len(self.labels) > 1:
            decision = "winner"
        comparisons = []
        if decision == "tie":
            win = _tie_pick(active, self.rows, rounds, self.default)
            rule = (
                f"tie after {rnd} rounds (no paired 95 % CI excludes 0 among {len(active)}): "
                "fewer threads, then less memory (peak RSS), then the untuned default, "
                "then the race mean"
            )
        else:
            win = active[0]
            comparisons = [compare(rounds, win, x) for x in self.labels if x != win]
            if decision == "sole":
                rule = "sole finalist: nothing else within noise or the margin"
            elif all(c.verdict == "a better" for c in comparisons):
                rule = "better than each other finalist beyond noise (paired 95 % CI above 0)"
            else:
                rule = "the last one left: " + "; ".join(f"{k} {v}" for k, v in eliminated.items())
        means = {}
        for label in self.labels:
            seen = [x.mean_ts or 0.0 for rd in rounds if (x := rd.entry(label)) is not None and x.ok]
            if seen:
                means[label] = round(sum(seen) / len(seen), 3)
        first = self.rows[self.labels[0]]
        return RaceOutcome(
            model=first.model,
            model_sha256=first.model_sha256,
            race_id=self.race_id,
            kind=first.kind,
            test=self.test.name,
            depth=self.test.depth,
            finalists=[self.rows[x].point for x in self.labels],
            labels=self.labels,
            not_raced=not_raced,
            default=self.default,
            search_pick=search_pick,
            rounds=rnd,
            decision=decision,
            winner=self.rows[win].point,
            winner_label=win,
            rule=rule,
            comparisons=comparisons or [compare(rounds, win, x) for x in self.labels if x != win],
            eliminated=eliminated,
            tied=[x for x in active if x != win] if decision == "tie" else [],
            race_means=means,
            throttled_processes=sum(e.gate.throttled for rd in rounds for e in rd.entries),
            contended_processes=sum(e.gate.contended for rd in rounds for e in rd.entries),
            build_id=self.m.runtime.build_id,
            host_fingerprint=self.m.host.fingerprint,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )


def run_race(
    measurer: PointMeasurer,
    rows: list[ThroughputResult],
    not_raced: list[str],
    st: RaceSettings,
    *,
    search_pick: str,
    on_round: Callable[[RaceRound], None] | None = None,
    default: Point | None = None,
) -> RaceOutcome:
    """Race `rows` (the finalists' search rows, best first); store every round and the decision.
    `default`: the untuned config, which wins a tie that threads and memory leave open."""
    race = _Race(measurer, rows, st, on_round, default)
    out = race.run(search_pick, not_raced)
    measurer.store.put(
        DECISION_STAGE,
        measurer.prov,
        {"race": out.race_id, "kind": out.kind, "test": out.test, "depth": out.depth},
        out,
        status=out.decision,
        version=DECISION_VERSION,
    )
    return out
