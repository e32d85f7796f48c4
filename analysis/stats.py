"""Small statistics used by the ablation table: t-interval of a mean, and the test of a difference.

Choice of test (documented in the report too):
- both levels have >= 2 finished runs: Welch's t-test (unequal variances). With 2 runs per level
  its df is tiny, so it is honest but weak: a big effect is needed to reach p < 0.05.
- the bootstrap is used only when both levels have >= 3 runs AND the caller asks for it
  (`method="bootstrap"`); with 2 values a resampled mean takes only 3 distinct values,
  which gives intervals that are far too narrow, so it is never the default for small n.
- a level with 1 run, or two levels whose runs are all identical (zero variance), have no
  within-level variance: no t-test; the difference is compared to the seed-to-seed noise measured
  elsewhere in the sweep (`noise_sd`), when there is any, else it is "not testable" (no p-value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof=1); NaN for n < 2
    ci_low: float
    ci_high: float


def summarize(values: list[float] | np.ndarray, confidence: float = 0.95) -> Summary:
    """Mean, sample std and the two-sided t confidence interval of the mean (NaN where undefined)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass
class Comparison:
    diff: float  # mean(b) - mean(a)
    ci_low: float
    ci_high: float
    p: float
    test: str  # "welch", "bootstrap", "noise", "none"
    within_noise: bool | None  # None: cannot tell


def welch(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> Comparison:
    """Welch's t-test of mean(b) - mean(a) with the Welch–Satterthwaite CI of the difference."""
    diff = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # identical runs on both sides: no variance to test against, so no p-value
        return Comparison(diff, math.nan, math.nan, math.nan, "none", None)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
    return Comparison(diff, diff - half, diff + half, p, "welch", p >= ALPHA)


def bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 10_000, seed: int = 0,
              confidence: float = 0.95) -> Comparison:
    """Percentile bootstrap CI of mean(b) - mean(a); p is the two-sided share of resampled
    differences on the far side of zero (a simple, conservative approximation)."""
    rng = np.random.default_rng(seed)
    ma = rng.choice(a, size=(n_resamples, len(a)), replace=True).mean(axis=1)
    mb = rng.choice(b, size=(n_resamples, len(b)), replace=True).mean(axis=1)
    d = mb - ma
    lo, hi = np.quantile(d, [(1 - confidence) / 2, 0.5 + confidence / 2])
    p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
    return Comparison(float(b.mean() - a.mean()), float(lo), float(hi), p, "bootstrap", bool(lo <= 0 <= hi))


def compare(a: list[float] | np.ndarray, b: list[float] | np.ndarray, noise_sd: float | None = None,
            method: str = "welch") -> Comparison:
    """Difference mean(b) - mean(a) and whether it is within noise (see module docstring)."""
    a = np.asarray([v for v in a if math.isfinite(v)], dtype=float)
    b = np.asarray([v for v in b if math.isfinite(v)], dtype=float)
    if len(a) == 0 or len(b) == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan, "none", None)
    if len(a) >= 2 and len(b) >= 2 and (a.std() > 0 or b.std() > 0):
        if method == "bootstrap" and len(a) >= 3 and len(b) >= 3:
            return bootstrap(a, b)
        return welch(a, b)
    diff = float(b.mean() - a.mean())
    if noise_sd is None or not math.isfinite(noise_sd) or noise_sd <= 0:
        return Comparison(diff, math.nan, math.nan, math.nan, "none", None)
    # Known seed noise sd: a normal-approximation interval of the difference of the two means.
    half = 1.96 * noise_sd * math.sqrt(1 / len(a) + 1 / len(b))
    p = float(2 * stats.norm.sf(abs(diff) / (half / 1.96)))
    return Comparison(diff, diff - half, diff + half, p, "noise", abs(diff) < half)


def is_tie(values: list[float] | np.ndarray) -> bool:
    """Two or more finite values, all equal (to rounding): no setting differs from another."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return len(x) >= 2 and bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())))


def pooled_sd(groups: list[list[float]]) -> float:
    """Pooled within-group sample std over the groups with >= 2 values (NaN if none): the
    seed-to-seed noise of the sweep when groups are configurations repeated over seeds."""
    num, dof = 0.0, 0
    for g in groups:
        x = np.asarray([v for v in g if math.isfinite(v)], dtype=float)
        if len(x) >= 2:
            num += float(((x - x.mean()) ** 2).sum())
            dof += len(x) - 1
    return math.sqrt(num / dof) if dof else math.nan
