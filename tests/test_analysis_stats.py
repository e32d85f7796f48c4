"""Statistics of the analysis against known values (scipy as the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.curves import pareto_mask
from analysis.stats import bootstrap, compare, pooled_sd, summarize, welch


def test_summarize_t_interval_known_values():
    s = summarize([1, 2, 3, 4, 5])
    assert s.n == 5 and s.mean == 3.0
    assert s.std == pytest.approx(math.sqrt(2.5))
    # t(0.975, 4) = 2.776445; half-width = 2.776445 * sqrt(2.5) / sqrt(5) = 1.963243
    assert s.ci_low == pytest.approx(3 - 1.963243, abs=1e-6)
    assert s.ci_high == pytest.approx(3 + 1.963243, abs=1e-6)
    lo, hi = stats.t.interval(0.95, 4, loc=3, scale=stats.sem([1, 2, 3, 4, 5]))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi))


def test_summarize_small_and_nan():
    one = summarize([2.5, float("nan")])
    assert one.n == 1 and one.mean == 2.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert summarize([]).n == 0


def test_welch_matches_scipy():
    a = np.array([20.1, 19.8, 20.5, 20.0, 19.9])
    b = np.array([21.0, 22.3, 20.9, 21.8])
    c = welch(a, b)
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert c.p == pytest.approx(ref.pvalue)
    assert c.diff == pytest.approx(b.mean() - a.mean())
    ci = ref.confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high))
    assert c.test == "welch" and c.within_noise is False


def test_welch_known_textbook_value():
    # means 2 and 4, variances 1: se = sqrt(2/3), t = 2.449, df = 4 -> two-sided p = 0.0705
    c = welch(np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0]))
    assert c.p == pytest.approx(0.0705, abs=1e-4)
    assert c.within_noise is True  # p >= 0.05: a difference of 2 with 3 runs each is within noise


def test_compare_picks_the_test():
    assert compare([1.0, 1.1], [1.2, 1.3]).test == "welch"
    assert compare([1.0, 1.1, 1.05], [1.2, 1.3, 1.25], method="bootstrap").test == "bootstrap"
    # Bootstrap never for n < 3: Welch instead.
    assert compare([1.0, 1.1], [1.2, 1.3], method="bootstrap").test == "welch"
    # One run per side: untestable without a noise estimate ...
    c = compare([1.0], [1.2])
    assert c.test == "none" and c.within_noise is None and c.diff == pytest.approx(0.2)
    # ... and judged against the seed noise when there is one: 1.96 * 0.1 * sqrt(2) = 0.277 > 0.2.
    c = compare([1.0], [1.2], noise_sd=0.1)
    assert c.test == "noise" and c.within_noise is True
    assert c.p == pytest.approx(2 * stats.norm.sf(0.2 / (0.1 * math.sqrt(2))))
    assert compare([1.0], [1.5], noise_sd=0.1).within_noise is False
    assert compare([], [1.0]).test == "none"


def test_bootstrap_is_deterministic_and_sensible():
    a = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    b = a + 1.0
    c1, c2 = bootstrap(a, b), bootstrap(a, b)
    assert (c1.ci_low, c1.ci_high) == (c2.ci_low, c2.ci_high)
    assert c1.ci_low <= 1.0 <= c1.ci_high and c1.ci_low > 0 and c1.within_noise is False
    same = bootstrap(a, a[::-1].copy())
    assert same.within_noise is True


def test_pooled_sd_known_value():
    # groups [1,3] (ss=2, df=1) and [2,4,6] (ss=8, df=2): sqrt(10/3); a single value adds nothing
    assert pooled_sd([[1, 3], [2, 4, 6], [9]]) == pytest.approx(math.sqrt(10 / 3))
    assert math.isnan(pooled_sd([[1], [2]]))


def test_pareto_mask():
    y = np.array([1.0, 0.9, 0.8, 0.95])
    cost = np.array([1.0, 2.0, 3.0, 2.5])
    assert pareto_mask(y, cost, "min").tolist() == [True, True, True, False]
    assert pareto_mask(-y, cost, "max").tolist() == [True, True, True, False]
