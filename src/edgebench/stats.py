"""Uncertainty for every number we print: mean ± sd, Student-t CIs, Wilson intervals, drift.

Repetitions of a benchmark are few (3-10), so the CI of a mean uses Student's t, not 1.96.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = [
    "Summary",
    "clustered_bootstrap",
    "mcnemar",
    "monotonic_drift",
    "paired_difference",
    "summarize",
    "summarize_groups",
    "wilson",
]


class Summary(BaseModel):
    model_config = ConfigDict(frozen=True)

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    @property
    def rel_half_width(self) -> float:
        """CI half-width as a fraction of the mean (inf when it cannot be known)."""
        return self.half_width / abs(self.mean) if self.mean else math.inf


def summarize(samples: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample sd and the t-interval of the mean. One sample: an infinitely wide CI."""
    from scipy import stats as sps  # lazy: scipy costs ~1 s of imports at start-up

    x = np.asarray(samples, dtype=float)
    n = int(x.size)
    if n == 0:
        raise ValueError("no samples")
    mean = float(x.mean())
    if n == 1:
        return Summary(n=1, mean=mean, sd=0.0, ci_low=-math.inf, ci_high=math.inf)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(n=n, mean=mean, sd=sd, ci_low=mean - half, ci_high=mean + half)


def summarize_groups(groups: Sequence[Sequence[float]], confidence: float = 0.95) -> Summary:
    """Mean and t-interval over group means, where a group is one process's repetitions.

    Repetitions inside one llama.cpp process share its thread placement and memory layout; measured
    here, tg128 varied 0.3-1 % within a process and 9 % between eight identical processes. So the
    process is the unit: the CI comes from the spread of the process means (k - 1 degrees of
    freedom), and one process alone gives an infinitely wide CI however steady its repetitions.
    `sd` stays the spread of all samples, as llama-bench reports it.
    """
    means = [float(np.mean(g)) for g in groups if len(g)]
    flat = [float(x) for g in groups for x in g]
    if not means:
        raise ValueError("no samples")
    between = summarize(means, confidence)
    sd = float(np.std(flat, ddof=1)) if len(flat) > 1 else 0.0
    return Summary(n=len(flat), mean=between.mean, sd=sd, ci_low=between.ci_low, ci_high=between.ci_high)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean of the per-pair differences a[i] - b[i] with its t-interval (n - 1 degrees of freedom).

    Each pair was measured in the same minute (one round of an interleaved race), so whatever
    drifts between minutes (temperature, another tenant's load) cancels in the difference instead
    of widening both CIs or, worse, favouring whichever config ran in the cooler minute. One pair
    gives an infinitely wide interval.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} values: not pairs")
    return summarize([x - y for x, y in zip(a, b, strict=True)], confidence)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (well-behaved at 0/n and n/n, unlike Wald)."""
    from scipy import stats as sps  # lazy: scipy costs ~1 s of imports at start-up

    if n <= 0:
        return (0.0, 1.0)
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def monotonic_drift(samples: Sequence[float], min_n: int = 4, min_total: float = 0.03) -> bool:
    """True when repetitions fall every time and by ≥ `min_total` overall: throttling, not noise."""
    if len(samples) < min_n:
        return False
    falling = all(b < a for a, b in itertools.pairwise(samples))
    return falling and samples[0] > 0 and (samples[0] - samples[-1]) / samples[0] >= min_total


def clustered_bootstrap(
    clusters: Sequence[Sequence[float]], *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of per-cluster means with a two-stage bootstrap CI (clusters, then runs inside them).

    A quality item is a cluster: its variants and samples are not independent evidence, so
    resampling them as if they were would make the interval too narrow.
    """
    groups = [np.asarray(c, dtype=float) for c in clusters if len(c)]
    if not groups:
        raise ValueError("no clusters")
    point = float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng(seed)
    k = len(groups)
    means = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, k, size=k)
        means[b] = np.mean([rng.choice(groups[i], size=groups[i].size).mean() for i in pick])
    alpha = (1 - confidence) / 2
    return point, float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def mcnemar(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs (items only one model passed)."""
    from scipy import stats as sps  # lazy: scipy costs ~1 s of imports at start-up

    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * sps.binom.cdf(min(a_only, b_only), n, 0.5)))
