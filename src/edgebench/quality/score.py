"""Scores with their uncertainty: per item, per category, weighted total; paired comparison.

An item is the unit of evidence. Its variants and samples are repeated looks at the same
capability, so intervals resample items first and runs inside them second (clustered
bootstrap); the Wilson interval over items' greedy verdicts is shown beside it, as in seed 001.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgebench.errors import ConfigError
from edgebench.quality.records import FailureClass
from edgebench.quality.runner import QualityResult
from edgebench.stats import clustered_bootstrap, mcnemar, wilson

__all__ = ["CategoryScore", "Comparison", "ItemScore", "SuiteScore", "compare", "score"]


class ItemScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    item: str
    category: str
    weight: float
    runs: int
    pass_rate: float
    pass_at_1: bool  # the greedy answer to the canonical prompt
    pass_hat_k: bool  # every sample of the canonical prompt passed (τ-bench's pass^k)
    failures: dict[str, int]


class CategoryScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    category: str
    weight: float
    items: int
    greedy_passed: int
    wilson_low: float
    wilson_high: float
    mean: float  # mean item pass rate over every run
    ci_low: float
    ci_high: float
    failures: dict[str, int]


class SuiteScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    target: str
    suite: str
    mode: str
    runs: int
    items: list[ItemScore]
    categories: list[CategoryScore]
    weighted: float
    weighted_low: float
    weighted_high: float
    mean_latency_s: float
    latency_sd_s: float
    template_missing: bool
    unsandboxed: int = 0  # code replies not run (no sandbox here): left out of every score


def _items(results: list[QualityResult]) -> list[ItemScore]:
    by: dict[str, list[QualityResult]] = defaultdict(list)
    for r in results:
        by[r.item].append(r)
    out = []
    for item, rs in by.items():
        canon = [r for r in rs if r.variant == 0]
        greedy = [r for r in canon if r.sample == 0]
        out.append(
            ItemScore(
                item=item,
                category=rs[0].category,
                weight=rs[0].weight,
                runs=len(rs),
                pass_rate=sum(r.passed for r in rs) / len(rs),
                pass_at_1=bool(greedy and greedy[0].passed),
                pass_hat_k=bool(canon) and all(r.passed for r in canon),
                failures=dict(Counter(r.failure.value for r in rs if not r.passed)),
            )
        )
    return out


def _weighted_bootstrap(
    groups: list[list[float]], weights: list[float], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    w = np.asarray(weights)
    arrs = [np.asarray(g, dtype=float) for g in groups]
    point = float(np.dot(w, [a.mean() for a in arrs]) / w.sum())
    rng = np.random.default_rng(seed)
    k = len(arrs)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, k, size=k)
        means = np.array([rng.choice(arrs[i], size=arrs[i].size).mean() for i in pick])
        boots[b] = float(np.dot(w[pick], means) / w[pick].sum())
    return point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def score(results: list[QualityResult]) -> SuiteScore:
    if not results:
        raise ValueError("no quality results to score")
    # Code that was not run for want of a sandbox is neither a pass nor a fail of the model.
    unsandboxed = sum(r.failure is FailureClass.UNSANDBOXED for r in results)
    results = [r for r in results if r.failure is not FailureClass.UNSANDBOXED]
    if not results:
        raise ConfigError(
            "no reply could be scored: code items need bubblewrap (apt-get install bubblewrap), "
            "or [quality] allow_unsandboxed = true / --allow-unsandboxed"
        )
    items = _items(results)
    runs_by_item: dict[str, list[float]] = defaultdict(list)
    for r in results:
        runs_by_item[r.item].append(1.0 if r.passed else 0.0)
    cats = []
    for cat in dict.fromkeys(i.category for i in items):
        its = [i for i in items if i.category == cat]
        n_pass = sum(i.pass_at_1 for i in its)
        lo, hi = wilson(n_pass, len(its))
        mean, clo, chi = clustered_bootstrap([runs_by_item[i.item] for i in its])
        fails: Counter[str] = Counter()
        for i in its:
            fails.update(i.failures)
        cats.append(
            CategoryScore(
                category=cat,
                weight=its[0].weight,
                items=len(its),
                greedy_passed=n_pass,
                wilson_low=lo,
                wilson_high=hi,
                mean=mean,
                ci_low=clo,
                ci_high=chi,
                failures=dict(fails),
            )
        )
    w, wlo, whi = _weighted_bootstrap([runs_by_item[i.item] for i in items], [i.weight for i in items])
    lat = np.asarray([r.latency_s for r in results])
    return SuiteScore(
        target=results[0].target,
        suite=results[0].suite,
        mode=results[0].mode,
        runs=len(results),
        items=items,
        categories=cats,
        weighted=w,
        weighted_low=wlo,
        weighted_high=whi,
        mean_latency_s=float(lat.mean()),
        latency_sd_s=float(lat.std(ddof=1)) if lat.size > 1 else 0.0,
        template_missing=any(r.failure is FailureClass.TEMPLATE_MISSING for r in results),
        unsandboxed=unsandboxed,
    )


class Comparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    items: int
    a_only: int  # items whose greedy answer passed for A only
    b_only: int
    mcnemar_p: float
    diff: float  # weighted score A − B over shared items
    diff_low: float
    diff_high: float
    verdict: str


def compare(a: list[QualityResult], b: list[QualityResult], n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Paired: the same items for both; McNemar on greedy verdicts, paired bootstrap on the score."""
    sa, sb = {i.item: i for i in _items(a)}, {i.item: i for i in _items(b)}
    shared = sorted(set(sa) & set(sb))
    if not shared:
        raise ValueError("the two result sets share no items")
    a_only = sum(sa[i].pass_at_1 and not sb[i].pass_at_1 for i in shared)
    b_only = sum(sb[i].pass_at_1 and not sa[i].pass_at_1 for i in shared)
    w = np.asarray([sa[i].weight for i in shared])
    d = np.asarray([sa[i].pass_rate - sb[i].pass_rate for i in shared])
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for k in range(n_boot):
        pick = rng.integers(0, len(shared), size=len(shared))
        boots[k] = float(np.dot(w[pick], d[pick]) / w[pick].sum())
    lo, hi = float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
    diff = float(np.dot(w, d) / w.sum())
    name_a, name_b = a[0].target, b[0].target
    if lo > 0:
        verdict = f"{name_a} better (95 % CI of the difference excludes 0)"
    elif hi < 0:
        verdict = f"{name_b} better (95 % CI of the difference excludes 0)"
    else:
        verdict = "tied: the difference is within noise"
    return Comparison(
        a=name_a,
        b=name_b,
        items=len(shared),
        a_only=a_only,
        b_only=b_only,
        mcnemar_p=mcnemar(a_only, b_only),
        diff=diff,
        diff_low=lo,
        diff_high=hi,
        verdict=verdict,
    )
