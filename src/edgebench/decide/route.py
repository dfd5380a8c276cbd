"""Model map, routing table and do-not-use list, by explicit rules over measured data.

Every line names the rule that placed it and the numbers it read. Missing evidence never
crashes a rule: a model without quality (or context, RAM, decode speed) is "not measured" for the
rules that need it and simply not a candidate there.

Rules (thresholds from `BudgetConfig`):

- **fits RAM**: host total (measured, else the planner's prediction) ≤ host RAM − `ram_reserve_mib`.
- **fastest micro-model**: the highest measured decode t/s (best tg config) among models that fit
  and are not on the do-not-use list.
- **best default**: the highest composite among models that fit, are not on the do-not-use list,
  pass tool_call ≥ `tool_call_floor`, stable context ≥ `context_floor` and mean latency ≤ `latency_s`.
- **quality tier**: the highest weighted quality among models that fit, are not on the do-not-use
  list and answer within `quality_latency_s`.
- **not practical**: mean latency > `quality_latency_s`, stable context < `context_floor`, does not
  fit RAM, or every throughput config failed.
- **bigger and not better** (seed 001 finding 5): a larger model whose quality is not better
  beyond noise (its CI low ≤ the smaller one's CI high) than a smaller model that is faster beyond
  noise (latency CIs apart). A flag; it becomes a do-not-use cause when the smaller model also
  dominates the bigger one on the Pareto front (no worse anywhere, better beyond noise somewhere).
- **do not use**: tool-call refusals (refused + no_call) ≥ `tool_refusal_max` of tool-call runs;
  thinking loops (timeout + empty) ≥ `loop_rate_max` of all runs; no chat template; no tried
  context held; bigger and not better *and* dominated by the smaller model.

A selection whose best candidates tie (CIs overlap) says so, and the tie is settled by a stated
rule on the other side of the trade-off: quality ties go to the lower mean latency, speed and
composite ties (best default) to the higher weighted quality; then the smaller model.
"""

from __future__ import annotations

from collections.abc import Callable

from edgebench.config import BudgetConfig
from edgebench.decide.evidence import ModelEvidence
from edgebench.decide.rank import Measures, Ranking, measures, overlap, rank
from edgebench.decide.routing import (
    USE_CASES,
    Budgets,
    Cause,
    Choice,
    Closest,
    DoNotUse,
    Flag,
    MapLine,
    NotMeasured,
    Route,
    Routing,
    Settle,
    UseCase,
)
from edgebench.measure.serving import ServingSpec
from edgebench.quality.records import FailureClass
from edgebench.quality.score import CategoryScore

__all__ = ["route"]


# ------------------------------------------------------------------------------------- per model


class _Model:
    """One model's evidence and derived figures, as the rules read them."""

    def __init__(self, e: ModelEvidence, m: Measures, b: Budgets) -> None:
        self.e, self.m = e, m
        self.name = e.name
        self.cats: dict[str, CategoryScore] = (
            {c.category: c for c in e.quality.categories} if e.quality else {}
        )
        self.ctx = e.context.stable_ctx if e.context is not None else None
        self.fits: bool | None = None
        if m.ram_mib is not None and b.usable_mib is not None:
            self.fits = m.ram_mib <= b.usable_mib

    def cat(self, name: str) -> CategoryScore | None:
        return self.cats.get(name)

    def ram_text(self, b: Budgets) -> str:
        if self.m.ram_mib is None:
            return "host RAM not measured"
        limit = "" if b.usable_mib is None else f" vs {b.usable_mib} MiB usable"
        return f"host {self.m.ram_mib:.0f} MiB ({self.m.ram_source}){limit}"


def _cat_text(c: CategoryScore) -> str:
    return f"{c.category} {c.mean:.2f} [{c.ci_low:.2f}, {c.ci_high:.2f}] ({c.greedy_passed}/{c.items} greedy)"


def _lat_text(m: Measures) -> str:
    if m.latency_s is None:
        return "latency not measured"
    if m.latency_low == m.latency_high:
        return f"latency {m.latency_s:.1f} s (spread unknown)"
    return f"latency {m.latency_s:.1f} s [{m.latency_low:.1f}, {m.latency_high:.1f}]"


def _size_lt(a: Measures, b: Measures) -> bool | None:
    if a.size is None or b.size is None or a.size_kind != b.size_kind:
        return None
    return a.size < b.size


# ------------------------------------------------------------------------------------ do not use


def _runs_in(e: ModelEvidence, category: str) -> int:
    assert e.quality is not None
    return sum(i.runs for i in e.quality.items if i.category == category)


def _do_not_use(x: _Model, b: Budgets) -> list[Cause]:
    e, out = x.e, []
    if not e.chat_template or (e.quality is not None and e.quality.template_missing):
        out.append(
            Cause(rule="template_missing", detail="no chat template: chat quality cannot be scored or served")
        )
    if e.quality is not None:
        tool = x.cat("tool_call")
        runs = _runs_in(e, "tool_call") if tool else 0
        if tool is not None and runs:
            refused = tool.failures.get(FailureClass.REFUSED.value, 0)
            no_call = tool.failures.get(FailureClass.NO_CALL.value, 0)
            rate = (refused + no_call) / runs
            if rate >= b.tool_refusal_max:
                out.append(
                    Cause(
                        rule="tool_refusal",
                        detail=f"refused {refused} and made no call {no_call} of {runs} tool-call runs "
                        f"({rate:.0%} ≥ {b.tool_refusal_max:.0%})",
                    )
                )
        stuck = sum(
            c.failures.get(FailureClass.TIMEOUT.value, 0) + c.failures.get(FailureClass.EMPTY.value, 0)
            for c in e.quality.categories
        )
        if e.quality.runs and stuck / e.quality.runs >= b.loop_rate_max:
            out.append(
                Cause(
                    rule="thinking_loops",
                    detail=f"{stuck} of {e.quality.runs} runs timed out or came back empty "
                    f"({stuck / e.quality.runs:.0%} ≥ {b.loop_rate_max:.0%}): thinking loops suspected",
                )
            )
    if e.context is not None and e.context.stable_ctx is None and e.context.tried:
        tried = ", ".join(f"{k} {'ok' if v else 'failed'}" for k, v in sorted(e.context.tried.items()))
        out.append(Cause(rule="context_failure", detail=f"no tried context held ({tried})"))
    return out


def _size_text(m: Measures) -> str:
    assert m.size is not None
    if m.size_kind == "params":
        return f"{m.size / 1e9:.2g}B params"
    return f"{m.size / 2**30:.2f} GiB file"


def _bigger_not_better(xs: list[_Model]) -> list[Flag]:
    """One flag per bigger model, against the best-scoring smaller, faster model that meets the rule."""
    flags = []
    for big in xs:
        bm = big.m
        if bm.quality is None:
            continue
        assert bm.quality_low is not None and bm.latency_low is not None
        hits = []
        for small in xs:
            sm = small.m
            if small is big or not _size_lt(sm, bm) or sm.quality is None or sm.suite != bm.suite:
                continue
            assert sm.quality_high is not None and sm.latency_high is not None
            if bm.quality_low <= sm.quality_high and sm.latency_high < bm.latency_low:
                hits.append(small)
        if not hits:
            continue
        hits.sort(key=lambda x: (-(x.m.quality or 0.0), x.m.latency_s or 0.0))
        sm = hits[0].m
        assert sm.quality_low is not None and bm.quality_high is not None
        if bm.quality_high < sm.quality_low:
            verdict = "worse beyond noise"
        elif bm.quality > (sm.quality or 0.0):
            verdict = "a higher point estimate, within noise (CIs overlap)"
        else:
            verdict = "no better (CIs overlap)"
        because = (
            f"{_size_text(bm)} vs {_size_text(sm)}, slower beyond noise ({bm.latency_s:.1f} s vs "
            f"{sm.latency_s:.1f} s), quality {verdict}: {bm.quality:.2f} [{bm.quality_low:.2f}, "
            f"{bm.quality_high:.2f}] vs {sm.quality:.2f} [{sm.quality_low:.2f}, {sm.quality_high:.2f}]"
        )
        flags.append(
            Flag(bigger=big.name, smaller=hits[0].name, also=[h.name for h in hits[1:]], because=because)
        )
    return flags


# ----------------------------------------------------------------------------------- selections

_Scored = tuple[_Model, float, float, float]  # model, value, low, high


def _pick(cands: list[_Scored], higher: bool, settle: Settle) -> tuple[list[_Scored], str]:
    """Best first. The top tie set (CIs overlapping the best's) is ordered by `settle`, then size."""
    if not cands:
        return [], ""
    ordered = sorted(cands, key=lambda c: -c[1] if higher else c[1])
    top = ordered[0]
    tied = [c for c in ordered if overlap(c[2], c[3], top[2], top[3])]
    rest = [c for c in ordered if c not in tied]

    def key(c: _Scored) -> tuple[float, float]:
        m, inf = c[0].m, float("inf")
        first = (
            (m.latency_s if m.latency_s is not None else inf) if settle == "latency" else -(m.quality or 0.0)
        )
        return (first, m.size if m.size is not None else inf)

    tied.sort(key=key)
    note = ""
    if len(tied) > 1:
        by = "lower mean latency" if settle == "latency" else "higher weighted quality"
        note = (
            f"; tied with {', '.join(c[0].name for c in tied[1:])} (CIs overlap), settled by {by}, then size"
        )
    return tied + rest, note


def _scored(x: _Model, uc: UseCase, rk: dict[str, tuple[float, float, float]]) -> _Scored | None:
    m = x.m
    if uc.metric == "composite":
        r = rk.get(x.name)
        return (x, *r) if r else None
    if uc.metric == "weighted" and m.quality is not None:
        assert m.quality_low is not None and m.quality_high is not None
        return (x, m.quality, m.quality_low, m.quality_high)
    if uc.metric == "latency" and m.latency_s is not None:
        assert m.latency_low is not None and m.latency_high is not None
        return (x, m.latency_s, m.latency_low, m.latency_high)
    if uc.metric == "category" and uc.category:
        c = x.cat(uc.category)
        return (x, c.mean, c.ci_low, c.ci_high) if c else None
    return None


def _choice(c: _Scored) -> Choice:
    x = c[0]
    assert x.m.latency_s is not None
    return Choice(
        model=x.name,
        backend=x.e.backend,
        score=c[1],
        score_low=c[2],
        score_high=c[3],
        latency_s=x.m.latency_s,
    )


def _misses(
    x: _Model, uc: UseCase, b: Budgets, rk: dict[str, tuple[float, float, float]], causes: list[Cause]
) -> tuple[list[str], _Scored | None]:
    """What keeps `x` from qualifying for `uc`, each with its numbers."""
    limit = getattr(b, uc.budget) if uc.budget else None
    out = [f"do not use: {c.rule} ({c.detail})" for c in causes]
    if x.fits is False:
        out.append(f"does not fit: {x.ram_text(b)}")
    s = _scored(x, uc, rk)
    if s is None:
        out.append(f"{uc.category or uc.metric} not measured")
    if x.m.latency_s is None:
        out.append("latency not measured")
    elif limit is not None and x.m.latency_s > limit:
        out.append(f"latency {x.m.latency_s:.1f} s > {limit:.0f} s budget")
    if uc.needs_tools:
        tool = x.cat("tool_call")
        if tool is None:
            out.append("tool_call not measured")
        elif tool.mean < b.tool_call_floor:
            out.append(f"below the tool-call floor: {tool.mean:.2f} < {b.tool_call_floor:.2f}")
    return out, s


def _closest(
    uc: UseCase,
    xs: list[_Model],
    b: Budgets,
    rk: dict[str, tuple[float, float, float]],
    causes: dict[str, list[Cause]],
) -> Closest | None:
    """The candidate that misses the fewest conditions, then the best score on the metric, then
    the lowest latency."""
    best: tuple[tuple[int, float, float], Closest] | None = None
    for x in xs:
        misses, s = _misses(x, uc, b, rk, causes.get(x.name, []))
        if not misses:
            continue
        value = None if s is None else s[1]
        order = float("inf") if value is None else (value if uc.metric == "latency" else -value)
        lat = x.m.latency_s if x.m.latency_s is not None else float("inf")
        key = (len(misses), order, lat)  # then the nearer to the latency budget
        if best is None or key < best[0]:
            best = (key, Closest(model=x.name, backend=x.e.backend, score=value, misses=misses))
    return best[1] if best else None


def _route(uc: UseCase, pool: list[_Model], b: Budgets, rk: dict[str, tuple[float, float, float]]) -> Route:
    limit = getattr(b, uc.budget) if uc.budget else None
    cands: list[_Scored] = []
    for x in pool:
        s = _scored(x, uc, rk)
        if s is None or x.m.latency_s is None or (limit is not None and x.m.latency_s > limit):
            continue
        if uc.needs_tools:
            tool = x.cat("tool_call")
            if tool is None or tool.mean < b.tool_call_floor:
                continue
        cands.append(s)
    what = uc.category or uc.metric
    scope = f"{len(cands)} eligible model(s)"
    if limit is not None:
        scope += f" within {limit:.0f} s"
    if not cands:
        return Route(
            use_case=uc.name,
            metric=what,
            primary=None,
            backup=None,
            why=f"no model qualifies: {uc.rule}; {what} measured and eligible for none",
        )
    ordered, note = _pick(cands, higher=uc.metric != "latency", settle=uc.settle)
    p = ordered[0]
    why = f"{uc.rule}: {_describe(p, uc)}, {p[0].e.backend}; {scope}{note}"
    if len(ordered) > 1:
        why += f"; backup {ordered[1][0].name}: {_describe(ordered[1], uc)}"
    return Route(
        use_case=uc.name,
        metric=what,
        primary=_choice(p),
        backup=_choice(ordered[1]) if len(ordered) > 1 else None,
        why=why,
    )


def _describe(c: _Scored, uc: UseCase) -> str:
    text = _describe_measured(c, uc)
    note = c[0].e.latency_note  # a split candidate's latency is its model's, scaled: say so
    return f"{text} (latency {note})" if note else text


def _describe_measured(c: _Scored, uc: UseCase) -> str:
    x, v, lo, hi = c
    if uc.metric == "category" and uc.category:
        cat = x.cat(uc.category)
        assert cat is not None
        return f"{x.name} {_cat_text(cat)}, {_lat_text(x.m)}"
    if uc.metric == "latency":
        return f"{x.name} {_lat_text(x.m)}, weighted quality {x.m.quality:.2f}"
    label = {"composite": "composite", "weighted": "weighted quality"}[uc.metric]
    return f"{x.name} {label} {v:.3g} [{lo:.3g}, {hi:.3g}], {_lat_text(x.m)}"


# -------------------------------------------------------------------------------------- model map


def _fastest(xs: list[_Model], dnu: set[str]) -> MapLine:
    cands = [x for x in xs if x.m.tg is not None and x.fits is not False and x.name not in dnu]
    if not cands:
        return MapLine(
            role="fastest",
            model=None,
            because="no model with a measured decode speed fits RAM and is off the do-not-use list",
            numbers={},
        )
    cands.sort(key=lambda x: -(x.m.tg or 0.0))
    top = cands[0].m
    assert top.tg is not None and top.tg_low is not None and top.tg_high is not None
    tied = [
        x.name
        for x in cands[1:]
        if x.m.tg_low is not None
        and x.m.tg_high is not None
        and overlap(x.m.tg_low, x.m.tg_high, top.tg_low, top.tg_high)
    ]
    because = (
        f"highest measured decode speed among {len(cands)} model(s) that fit RAM and are not on the "
        f"do-not-use list: tg {top.tg:.2f} t/s "
        f"[{top.tg_low:.2f}, {top.tg_high:.2f}]"
    )
    if tied:
        because += f"; tied with {', '.join(tied)} (decode CIs overlap)"
    return MapLine(
        role="fastest",
        model=top.name,
        because=because,
        numbers={"tg_ts": top.tg, "tg_low": top.tg_low, "tg_high": top.tg_high, "backend": top.backend},
    )


def _default(
    xs: list[_Model], b: Budgets, rk: dict[str, tuple[float, float, float]], dnu: set[str]
) -> MapLine:
    cands: list[_Scored] = []
    skipped: list[str] = []
    for x in xs:
        tool = x.cat("tool_call")
        r = rk.get(x.name)
        why_not = None
        if r is None:
            why_not = "quality not measured"
        elif x.name in dnu:
            why_not = "do-not-use"
        elif x.fits is False:
            why_not = "does not fit RAM"
        elif tool is None:
            why_not = "tool calling not measured"
        elif tool.mean < b.tool_call_floor:
            why_not = f"tool_call {tool.mean:.2f} < {b.tool_call_floor:.2f}"
        elif x.ctx is None:
            why_not = "stable context not measured"
        elif x.ctx < b.context_floor:
            why_not = f"stable ctx {x.ctx} < {b.context_floor}"
        elif x.m.latency_s is None:
            why_not = "latency not measured"
        elif x.m.latency_s > b.latency_s:
            why_not = f"latency {x.m.latency_s:.1f} s > {b.latency_s:.0f} s"
        if why_not:
            skipped.append(f"{x.name}: {why_not}")
        elif r is not None:
            cands.append((x, *r))
    rule = (
        f"highest composite with tool_call ≥ {b.tool_call_floor:.2f}, stable ctx ≥ {b.context_floor}, "
        f"latency ≤ {b.latency_s:.0f} s, fitting RAM"
    )
    if not cands:
        return MapLine(
            role="default",
            model=None,
            because=f"no model qualifies ({rule}): {'; '.join(skipped)}",
            numbers={},
        )
    ordered, note = _pick(cands, higher=True, settle="quality")
    x, v, lo, hi = ordered[0]
    tool = x.cat("tool_call")
    assert tool is not None and x.ctx is not None and x.m.latency_s is not None
    because = (
        f"{rule}: composite {v:.3g} [{lo:.3g}, {hi:.3g}], {_cat_text(tool)}, stable ctx {x.ctx}, "
        f"{_lat_text(x.m)}, {x.ram_text(b)}{note}"
    )
    return MapLine(
        role="default",
        model=x.name,
        because=because,
        numbers={
            "composite": v,
            "composite_low": lo,
            "composite_high": hi,
            "tool_call": tool.mean,
            "stable_ctx": x.ctx,
            "latency_s": x.m.latency_s,
            "backend": x.e.backend,
        },
    )


def _quality_tier(xs: list[_Model], b: Budgets, dnu: set[str]) -> MapLine:
    cands: list[_Scored] = []
    for x in xs:
        m = x.m
        if m.quality is None or m.latency_s is None or x.name in dnu or x.fits is False:
            continue
        if m.latency_s > b.quality_latency_s:
            continue
        assert m.quality_low is not None and m.quality_high is not None
        cands.append((x, m.quality, m.quality_low, m.quality_high))
    rule = (
        f"highest weighted quality within {b.quality_latency_s:.0f} s, fitting RAM, "
        "not on the do-not-use list"
    )
    if not cands:
        return MapLine(role="quality", model=None, because=f"no model qualifies ({rule})", numbers={})
    ordered, note = _pick(cands, higher=True, settle="latency")
    x, v, lo, hi = ordered[0]
    assert x.m.latency_s is not None
    return MapLine(
        role="quality",
        model=x.name,
        because=f"{rule}: quality {v:.2f} [{lo:.2f}, {hi:.2f}], {_lat_text(x.m)}{note}",
        numbers={"quality": v, "quality_low": lo, "quality_high": hi, "latency_s": x.m.latency_s},
    )


def _not_practical(x: _Model, b: Budgets) -> MapLine | None:
    reasons: list[str] = []
    numbers: dict[str, int | float | str] = {}
    m = x.m
    if m.latency_s is not None and m.latency_s > b.quality_latency_s:
        reasons.append(f"mean latency {m.latency_s:.1f} s > {b.quality_latency_s:.0f} s budget")
        numbers["latency_s"] = m.latency_s
    if x.ctx is not None and x.ctx < b.context_floor:
        reasons.append(f"stable ctx {x.ctx} < floor {b.context_floor}")
        numbers["stable_ctx"] = x.ctx
    if x.fits is False:
        assert m.ram_mib is not None
        reasons.append(f"does not fit: {x.ram_text(b)}")
        numbers["ram_mib"] = m.ram_mib
    if x.e.throughput and not any(t.ok for t in x.e.throughput):
        statuses = sorted({t.status for t in x.e.throughput})
        reasons.append(f"every throughput config failed ({', '.join(statuses)})")
    if not reasons:
        return None
    return MapLine(role="not_practical", model=x.name, because="; ".join(reasons), numbers=numbers)


# ------------------------------------------------------------------------------------------- route


def route(
    evidence: list[ModelEvidence],
    budgets: BudgetConfig,
    *,
    ram_total_mib: int | None = None,
    ranking: Ranking | None = None,
    serving: dict[str, ServingSpec] | None = None,
) -> Routing:
    """The model map, bigger-and-not-better flags, routing table and do-not-use list.

    `ram_total_mib` is the host's RAM (HostInfo.ram_total_mib); without it "fits" is not judged.
    `ranking` is `rank(evidence, budgets)`, computed here when not given; `serving` carries each
    managed model's serving spec into the routing file.
    """
    rk_all = ranking or rank(evidence, budgets)
    serving = serving or {}
    b = Budgets(
        latency_s=budgets.latency_s,
        quality_latency_s=budgets.quality_latency_s,
        ram_reserve_mib=budgets.ram_reserve_mib,
        ram_total_mib=ram_total_mib,
        tool_call_floor=budgets.tool_call_floor,
        context_floor=budgets.context_floor,
        tool_refusal_max=budgets.tool_refusal_max,
        loop_rate_max=budgets.loop_rate_max,
    )
    xs = [_Model(e, measures(e), b) for e in evidence]
    # Quality figures are compared only on the ranked suite; other suites count as not measured.
    ranked = {r.name for r in rk_all.rows}
    comp = {r.name: (r.composite, r.composite_low, r.composite_high) for r in rk_all.rows}

    causes: dict[str, list[Cause]] = {x.name: _do_not_use(x, b) for x in xs}
    flags = _bigger_not_better([x for x in xs if x.name in ranked])
    # A flag is information; do-not-use also needs the smaller model to dominate (Pareto): a bigger
    # model with a higher point estimate inside the noise stays usable, just unproven.
    dominated = {p.name: p.dominated_by for p in rk_all.pareto}
    for f in flags:
        by = [n for n in (f.smaller, *f.also) if n in dominated.get(f.bigger, [])]
        if by:
            causes[f.bigger].append(
                Cause(
                    rule="bigger_not_better",
                    detail=f"dominated by smaller {', '.join(by)}; vs {f.smaller}: {f.because}",
                )
            )
    do_not_use = [DoNotUse(model=n, causes=c) for n, c in causes.items() if c]
    dnu = {d.model for d in do_not_use}

    in_suite = [x for x in xs if x.name in ranked]
    pool = [x for x in in_suite if x.name not in dnu and x.fits is not False]
    not_practical = [line for x in xs if (line := _not_practical(x, b)) is not None]
    model_map = [
        _fastest(xs, dnu),
        _default(in_suite, b, comp, dnu),
        _quality_tier(in_suite, b, dnu),
        *not_practical,
    ]
    return Routing(
        suite=rk_all.suite,
        budgets=b,
        model_map=model_map,
        bigger_not_better=flags,
        routes=[_with_closest(_route(uc, pool, b, comp), uc, in_suite, b, comp, causes) for uc in USE_CASES],
        do_not_use=do_not_use,
        not_measured=_not_measured(evidence),
        serving={n: s for n, s in serving.items() if n in {x.name for x in xs}},
    )


def _with_closest(
    r: Route,
    uc: UseCase,
    xs: list[_Model],
    b: Budgets,
    rk: dict[str, tuple[float, float, float]],
    causes: dict[str, list[Cause]],
) -> Route:
    if r.primary is not None:
        return r
    c = _closest(uc, xs, b, rk, causes)
    if c is None:
        return r
    return r.model_copy(
        update={"closest": c, "why": f"{r.why}; closest: {c.model}, misses {'; '.join(c.misses)}"}
    )


def _not_measured(evidence: list[ModelEvidence]) -> list[NotMeasured]:
    checks: dict[str, Callable[[ModelEvidence], bool]] = {
        "throughput": lambda e: e.best_tg is not None or e.best_pp is not None,
        "context": lambda e: e.context is not None,
        "quality": lambda e: e.quality is not None,
        "memory": lambda e: e.context is not None and e.context.host_total_mib is not None,
    }
    out = []
    for e in evidence:
        missing = [k for k, ok in checks.items() if not ok(e)]
        if missing:
            out.append(NotMeasured(model=e.name, missing=missing))
    return out
