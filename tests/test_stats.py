from __future__ import annotations

import math

import pytest

from edgebench.stats import clustered_bootstrap, mcnemar, monotonic_drift, summarize, wilson


def test_summary_against_hand_computation() -> None:
    # mean 10, sample sd 1 (ddof=1), n=4: t(0.975, 3) = 3.182446 → half-width 1.591223
    s = summarize([9.0, 10.0, 11.0, 10.0 + 0.0])
    assert s.n == 4 and s.mean == pytest.approx(10.0)
    assert s.sd == pytest.approx(math.sqrt(2 / 3))
    half = 3.182446305284263 * math.sqrt(2 / 3) / 2
    assert s.ci_low == pytest.approx(10 - half) and s.ci_high == pytest.approx(10 + half)
    assert s.rel_half_width == pytest.approx(half / 10)


def test_single_sample_has_unknown_ci() -> None:
    s = summarize([5.0])
    assert s.sd == 0 and math.isinf(s.half_width)


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_wilson_matches_the_seed_numbers() -> None:
    # seed 001's point: 10/14 and 12/14 cannot be told apart
    lo10, hi10 = wilson(10, 14)
    lo12, hi12 = wilson(12, 14)
    assert (round(lo10, 2), round(hi10, 2)) == (0.45, 0.88)
    assert (round(lo12, 2), round(hi12, 2)) == (0.60, 0.96)
    assert lo12 < hi10  # overlapping
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(10, 10)[0] < 1.0  # 10/10 is not certainty


def test_monotonic_drift() -> None:
    assert monotonic_drift([10.0, 9.8, 9.6, 9.4, 9.2])
    assert not monotonic_drift([10.0, 9.9, 9.95, 9.8, 9.7])  # not every step falls
    assert not monotonic_drift([10.0, 9.99, 9.98, 9.97])  # falls, but by 0.3 %: noise
    assert not monotonic_drift([10.0, 9.0, 8.0])  # too few reps to tell


def test_clustered_bootstrap_is_wider_than_pretending_runs_are_independent() -> None:
    # 10 items; each item either always passes or always fails across its 9 runs
    clusters = [[1.0] * 9 if i < 6 else [0.0] * 9 for i in range(10)]
    point, lo, hi = clustered_bootstrap(clusters, n_boot=1000)
    assert point == pytest.approx(0.6)
    flat_lo, flat_hi = wilson(54, 90)  # 90 "independent" runs would claim this much
    assert (hi - lo) > (flat_hi - flat_lo)
    assert lo < 0.6 < hi


def test_clustered_bootstrap_degenerate() -> None:
    assert clustered_bootstrap([[1.0, 1.0], [1.0]]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        clustered_bootstrap([])


def test_mcnemar_exact() -> None:
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(5, 5) == 1.0
    # 8 discordant pairs all one way: 2 × 0.5^8 = 0.0078125
    assert mcnemar(8, 0) == pytest.approx(0.0078125)
    assert mcnemar(3, 1) == pytest.approx(0.625)
