"""Statistics for A/B reports on conversion-type metrics (a share of a count that converted).

Pure functions of counts; no I/O, stdlib only at runtime. Conventions:

- Arms are given as (successes, trials); "control" is arm 1 and "treatment" arm 2, and every
  difference is treatment minus control (p2 - p1), so positive means the treatment does better.
- Counts must be integers with 0 <= successes <= trials; anything else raises ValueError.
- Valid counts never raise and never produce NaN or infinity: a quantity that is undefined for the
  data (an interval for an arm with no trials, a z for zero pooled variance) is ``None``, so the
  results can go to JSON as they are.

The tests compare every function with statsmodels or scipy (dev dependencies only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from abtest.distributions import (
    check_confidence,
    chi2_sf,
    normal_two_sided_p,
    two_sided_critical_value,
)


class Interval(NamedTuple):
    """A confidence interval [low, high]."""

    low: float
    high: float


class ZTest(NamedTuple):
    """A z statistic (treatment minus control) and its two-sided p-value; None when undefined."""

    z: float | None
    p_value: float | None


class RelativeLift(NamedTuple):
    """Relative lift p_t / p_c - 1 with its interval; all None when undefined."""

    lift: float | None
    low: float | None
    high: float | None


class SampleRatio(NamedTuple):
    """A sample-ratio-mismatch check: chi-square goodness of fit of the arms' counts to the
    configured weights, and whether it flags a mismatch."""

    statistic: float | None
    df: int | None
    p_value: float | None
    mismatch: bool


class ChiSquare(NamedTuple):
    """A chi-square statistic, its degrees of freedom and p-value; None when undefined."""

    statistic: float | None
    df: int | None
    p_value: float | None


def check_counts(successes: int, trials: int) -> None:
    """Raise ValueError unless 0 <= successes <= trials."""
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes!r} of {trials!r}")


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval | None:
    """Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3).

    Unlike the Wald interval it stays inside [0, 1] and keeps its coverage at 0 or all successes.
    Agrees with statsmodels ``proportion_confint(method="wilson")``. ``None`` when trials == 0.
    """
    check_counts(successes, trials)
    check_confidence(confidence)
    if trials == 0:
        return None
    z = two_sided_critical_value(confidence)
    p = successes / trials
    z2n = z * z / trials
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials))
    # At 0 or all successes the bound is exactly 0 or 1; rounding would leave it a few ulps off.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == trials else min(1.0, center + half)
    return Interval(low, high)


def newcombe_diff_interval(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> Interval | None:
    """Newcombe's hybrid score interval for p2 - p1 (Newcombe 1998, method 10).

    It combines the two arms' Wilson intervals (l, u):
    low = d - sqrt((p2 - l2)^2 + (u1 - p1)^2), high = d + sqrt((u2 - p2)^2 + (p1 - l1)^2),
    with d = p2 - p1. Agrees with statsmodels ``confint_proportions_2indep(x2, n2, x1, n1,
    compare="diff", method="newcomb")``. ``None`` when either arm has no trials.
    """
    check_counts(x1, n1)
    check_counts(x2, n2)
    ci1 = wilson_interval(x1, n1, confidence)
    ci2 = wilson_interval(x2, n2, confidence)
    if ci1 is None or ci2 is None:
        return None
    p1, p2 = x1 / n1, x2 / n2
    d = p2 - p1
    low = d - math.hypot(p2 - ci2.low, ci1.high - p1)
    high = d + math.hypot(ci2.high - p2, p1 - ci1.low)
    return Interval(max(-1.0, low), min(1.0, high))


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> ZTest:
    """Pooled two-proportion z test of p1 == p2, two-sided (the score test; Agresti 2013, 3.1).

    z = (p2 - p1) / sqrt(p (1 - p) (1/n1 + 1/n2)) with the pooled p = (x1 + x2) / (n1 + n2).
    Agrees with statsmodels ``proportions_ztest([x1, x2], [n1, n2])`` (its z has the opposite
    sign: it is p1 - p2). Its square is ``chi_square_arms`` for two arms.

    Undefined (both None) when an arm has no trials, or when the pooled rate is 0 or 1: then both
    arms are all failures or all successes and there is no variance to scale the difference by.
    """
    check_counts(x1, n1)
    check_counts(x2, n2)
    if n1 == 0 or n2 == 0:
        return ZTest(None, None)
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0.0:
        return ZTest(None, None)
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    return ZTest(z, normal_two_sided_p(z))


def chi_square_arms(successes: Sequence[int], trials: Sequence[int]) -> ChiSquare:
    """Pearson's chi-square test of equal rates across k arms (the 2 x k table, no continuity
    correction), df = k - 1.

    Agrees with scipy ``chi2_contingency([successes, failures], correction=False)`` and R's
    ``prop.test(successes, trials)`` (which also applies no correction beyond two arms).

    Arms with no trials carry no information and are left out (scipy refuses a table with an empty
    column). Undefined (all None) when fewer than two arms remain, or when no arm has a success or
    no arm has a failure (an expected count of zero).
    """
    if len(successes) != len(trials):
        raise ValueError("successes and trials need one entry per arm")
    for x, n in zip(successes, trials, strict=True):
        check_counts(x, n)
    table = [(x, n) for x, n in zip(successes, trials, strict=True) if n > 0]
    total_trials = sum(n for _, n in table)
    total_successes = sum(x for x, _ in table)
    if len(table) < 2 or total_successes in (0, total_trials):
        return ChiSquare(None, None, None)
    rate = total_successes / total_trials
    statistic = 0.0
    for x, n in table:
        expected_successes = n * rate
        expected_failures = n - expected_successes
        statistic += (x - expected_successes) ** 2 / expected_successes
        statistic += (x - expected_successes) ** 2 / expected_failures
    df = len(table) - 1
    return ChiSquare(statistic, df, chi2_sf(statistic, df))


def relative_lift(
    x_control: int, n_control: int, x_treat: int, n_treat: int, confidence: float = 0.95
) -> RelativeLift:
    """Relative lift of the treatment's rate over the control's, p_t / p_c - 1, with a delta-method
    interval (as GrowthBook's gbstats ``frequentist_variance(..., relative=True)``).

    With var_c = p_c (1 - p_c) / n_c and var_t = p_t (1 - p_t) / n_t (independent arms), the
    first-order Taylor expansion of p_t / p_c gives
    Var(lift) = var_t / p_c^2 + var_c * p_t^2 / p_c^4, and the interval is lift +/- z sqrt(Var).
    gbstats takes a Student t quantile with Welch's df; at the sample sizes an experiment reports on
    that is the normal quantile used here. The interval is symmetric and can extend below -100%
    when the control rate is poorly known; lift itself never goes below -1.

    Undefined (all None) when an arm has no trials or the control has no successes (division by 0).
    """
    check_counts(x_control, n_control)
    check_counts(x_treat, n_treat)
    z = two_sided_critical_value(confidence)
    if n_control == 0 or n_treat == 0 or x_control == 0:
        return RelativeLift(None, None, None)
    p_c, p_t = x_control / n_control, x_treat / n_treat
    var_c = p_c * (1.0 - p_c) / n_control
    var_t = p_t * (1.0 - p_t) / n_treat
    lift = p_t / p_c - 1.0
    half = z * math.sqrt(var_t / p_c**2 + var_c * p_t**2 / p_c**4)
    return RelativeLift(lift, lift - half, lift + half)


def srm_check(
    counts: Sequence[int], weights: Sequence[float], threshold: float = 0.001
) -> SampleRatio:
    """Sample-ratio mismatch: Pearson's chi-square goodness of fit of the arms' counts to the
    counts the configured weights predict, df = k - 1; ``mismatch`` when p < threshold (0.001, as
    GrowthBook and Fabijan et al. 2019 "Diagnosing Sample Ratio Mismatch" recommend: the check runs
    on every report, so it must rarely fire by chance). Agrees with scipy ``chisquare``.

    An arm with weight 0 expects nobody: it is left out when empty, and any count in it is a
    certain mismatch (statistic None, as it is infinite; p 0). No counts at all, or fewer than two
    arms with weight, cannot be tested: statistic, df and p None, and no mismatch.
    """
    if len(counts) != len(weights):
        raise ValueError("counts and weights need one entry per arm")
    if any(c < 0 for c in counts):
        raise ValueError("counts must not be negative")
    if any(not (math.isfinite(w) and w >= 0.0) for w in weights) or sum(weights) <= 0.0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    if any(c > 0 and w == 0.0 for c, w in zip(counts, weights, strict=True)):
        return SampleRatio(None, None, 0.0, True)
    arms = [(c, w) for c, w in zip(counts, weights, strict=True) if w > 0.0]
    total = sum(c for c, _ in arms)
    if total == 0 or len(arms) < 2:
        return SampleRatio(None, None, None, False)
    weight_sum = sum(w for _, w in arms)
    statistic = 0.0
    for count, weight in arms:
        expected = total * weight / weight_sum
        statistic += (count - expected) ** 2 / expected
    df = len(arms) - 1
    p_value = chi2_sf(statistic, df)
    return SampleRatio(statistic, df, p_value, p_value < threshold)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (Holm 1979), controlling the family-wise error rate.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j)).
    Agrees with statsmodels ``multipletests(method="holm")``. Undefined p-values (None) stay None
    and do not count towards m. The result is in the order of the input.
    """
    if any(p is not None and not 0.0 <= p <= 1.0 for p in p_values):
        raise ValueError("p-values must lie in [0, 1]")
    defined = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(defined)
    for rank, (p, index) in enumerate(defined):
        # The running maximum keeps the adjusted values in the same order as the raw ones.
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
