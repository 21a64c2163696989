"""The statistics of a verdict: intervals of a mean, paired tests, Holm's correction, P(best).

The values given here are independent units: the leaderboard averages the seeds that share a pre-trained
ancestry into one unit first (:func:`kind_bench.leaderboard.seed_units`). Methods share units (the same
ancestry seed, few-shot subset and sampling noise), so every comparison is paired over units. With few
units a percentile bootstrap of the mean cannot leave their range (with 3 its "95%" interval is the
range, about 75% coverage), so the interval of a mean is Student's t below :data:`BCA_MIN_N` units and
BCa (``scipy.stats.bootstrap``) from there on. ``p_best`` follows rliable (Agarwal et al., NeurIPS
2021): the share of bootstrap resamples of the units in which a method has the best mean, with the units
resampled jointly for every method because they are shared; the leaderboard reports it from
:data:`BCA_MIN_N` units on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05
BCA_MIN_N = 10
RESAMPLES = 4000


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, str]:
    """(low, high, method) of a ``level`` interval of the mean: ``t`` below BCA_MIN_N values, else ``bca``;
    (nan, nan, "none") with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan"), "none"
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if np.allclose(x, x[0], rtol=1e-9, atol=1e-12):
        return mean, mean, "t"
    if len(x) >= BCA_MIN_N:
        res = stats.bootstrap((x,), np.mean, confidence_level=level, method="BCa", n_resamples=RESAMPLES,
                              random_state=0)
        return float(res.confidence_interval.low), float(res.confidence_interval.high), "bca"
    low, high = stats.t.interval(level, len(x) - 1, loc=mean, scale=sd / np.sqrt(len(x)))
    return float(low), float(high), "t"


@dataclass(frozen=True)
class Paired:
    """A paired comparison of a against b over shared units (difference = a - b)."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p: float
    test: str = "paired t"


def paired_test(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Paired t-test of a against b (two-sided) with the t-interval of the mean difference (the interval
    and the p-value of one test, at any number of units).

    With n < 10 a Wilcoxon signed-rank test cannot reach p < 0.05 whatever the data (n = 5: p >= 0.0625),
    so the t-test is used throughout. Identical differences leave the t-test no spread to measure: then
    p is the exact sign test's (``scipy.stats.binomtest``: 2 / 2^n when none is zero, 1 when all are), so
    two or three equal differences are not called significant.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = x - y
    if len(d) < 2:
        return Paired(len(d), float(d.mean()) if len(d) else float("nan"), float("nan"), float("nan"), float("nan"))
    mean = float(d.mean())
    if np.allclose(d, d[0], rtol=1e-9, atol=1e-12):  # constant differences: no spread to test against
        p = 1.0 if np.isclose(d[0], 0, atol=1e-12) else float(stats.binomtest(len(d), len(d)).pvalue)
        return Paired(len(d), mean, mean, mean, p, test="sign")
    result = stats.ttest_rel(x, y)
    interval = result.confidence_interval(LEVEL)
    return Paired(len(d), mean, float(interval.low), float(interval.high), float(result.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given): step-down over the sorted p-values."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def p_best(scores: dict[str, Sequence[float]], lower_is_better: bool, resamples: int = RESAMPLES,
           seed: int = 0) -> dict[str, float]:
    """P(rank 1) per method under a bootstrap over the shared units (ties share the win).

    ``scores[m][i]`` is method m's score on the i-th shared unit; every list has the same length.
    """
    names = list(scores)
    if not names or not len(scores[names[0]]):
        return {m: float("nan") for m in names}
    table = np.asarray([scores[m] for m in names], dtype=float)  # (methods, units)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, table.shape[1], size=(resamples, table.shape[1]))
    means = table[:, picks].mean(axis=2)  # (methods, resamples)
    best = means.min(axis=0) if lower_is_better else means.max(axis=0)
    winners = np.isclose(means, best, rtol=0, atol=1e-12)
    share = (winners / winners.sum(axis=0)).mean(axis=1)
    return {m: float(v) for m, v in zip(names, share, strict=True)}


def verdict(test: Paired, adjusted_p: float, lower_is_better: bool) -> str:
    """``better`` / ``worse`` (a is significantly better / worse than b after correction) or ``inconclusive``
    (the units do not separate them: not evidence that they are equal)."""
    if not adjusted_p < ALPHA:
        return "inconclusive"
    a_lower = test.mean_diff < 0
    return "better" if a_lower == lower_is_better else "worse"
