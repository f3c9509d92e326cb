"""abtest.sequential: the confidence sequence is wider than the fixed-horizon intervals, shrinks
with n, keeps its error rate under repeated peeking (where repeated z tests do not), and is
defined (or None) on edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import confint_proportions_2indep

from abtest.sequential import (
    ConfidenceSequence,
    always_valid_p,
    halfwidth,
    mixing_rho,
    sequential_diff,
    sequential_lift,
)
from abtest.stats import relative_lift, two_proportion_ztest


@st.composite
def informative_arm(draw: st.DrawFn) -> tuple[int, int]:
    """An arm with at least 20 successes and 20 failures: there the normal approximation holds and
    Newcombe's asymmetric interval is close to Wald's. (The CS contains Wald's interval always: its
    half-width is at least 1.5 times z SE for any n; with 5 of 82 at 99% Newcombe's skewed lower
    bound can poke out by 1e-5.)"""
    n = draw(st.integers(40, 2_000_000))
    x = draw(st.integers(20, n - 20))
    return x, n


@settings(max_examples=200)
@given(informative_arm(), informative_arm(), st.sampled_from([0.9, 0.95, 0.99]))
def test_cs_contains_fixed_horizon_intervals(
    control: tuple[int, int], treatment: tuple[int, int], confidence: float
) -> None:
    (x1, n1), (x2, n2) = control, treatment
    cs = sequential_diff(x1, n1, x2, n2, confidence)
    assert cs is not None
    for method in ("wald", "newcomb"):
        low, high = confint_proportions_2indep(
            x2, n2, x1, n1, compare="diff", method=method, alpha=1 - confidence
        )
        assert cs.low <= float(low)
        assert float(high) <= cs.high
    lift = relative_lift(x1, n1, x2, n2, confidence)
    lift_cs = sequential_lift(x1, n1, x2, n2, confidence)
    assert lift_cs is not None
    assert lift.low is not None
    assert lift.high is not None
    assert lift_cs.low <= lift.low
    assert lift.high <= lift_cs.high


@settings(max_examples=200)
@given(st.floats(1e-6, 1e3), st.integers(1, 10**7), st.floats(0.001, 0.5), st.floats(1.0, 1e6))
def test_p_value_below_alpha_iff_cs_excludes_zero(
    s2: float, n: int, alpha: float, tuning: float
) -> None:
    rho = mixing_rho(alpha, tuning)
    half = halfwidth(s2, n, alpha, rho)
    for estimate in (half * 0.999, half * 1.001, -half * 1.001):
        p = always_valid_p(estimate, s2, n, rho)
        assert 0.0 <= p <= 1.0
        assert (p < alpha) == (abs(estimate) > half)


def test_shrinks_with_n() -> None:
    widths = []
    for scale in (1, 10, 100, 1000, 10_000):
        cs = sequential_diff(10 * scale, 100 * scale, 12 * scale, 100 * scale)
        assert cs is not None
        widths.append(cs.high - cs.low)
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < widths[0] / 50


def test_gbstats_rho_formula() -> None:
    # eq. 161 by hand for alpha 0.05, N 5000: -2 ln 0.05 = 5.99146, ln(6.99146) = 1.94469.
    assert math.isclose(mixing_rho(0.05, 5000), math.sqrt(7.93615 / 5000), rel_tol=1e-5)


def test_halfwidth_by_hand_at_the_tuning_point() -> None:
    # s2 = 1, n = N = 5000, alpha = 0.05: u = n rho^2 = 7.93615, sqrt(u + 1) = 2.98934,
    # ln(2.98934 / 0.05) = 4.09078, 2 * 8.93615 * 4.09078 / (5000 * 7.93615) = 0.0018425.
    half = halfwidth(1.0, 5000, 0.05, mixing_rho(0.05, 5000))
    assert half == pytest.approx(math.sqrt(0.0018425), rel=1e-4)
    # i.e. 3.04 standard errors where a fixed-horizon interval takes 1.96: the price of peeking
    assert half * math.sqrt(5000) == pytest.approx(3.035, abs=1e-3)


def _peeking_false_positive_rates(
    experiments: int, peeks: int, per_peek: int, rate: float
) -> tuple[float, float]:
    """A/A experiments (both arms convert at ``rate``) looked at after every ``per_peek`` new
    customers per arm; the share stopped for a "significant" difference by the CS and by a
    naive 95% z test at any look."""
    rng = np.random.default_rng(20261123)
    batches = rng.binomial(per_peek, rate, size=(experiments, 2, peeks))
    cumulative = np.cumsum(batches, axis=2)
    sequential_hits = naive_hits = 0
    for experiment in cumulative:
        cs_stop = z_stop = False
        for look in range(peeks):
            n = per_peek * (look + 1)
            x_c, x_t = int(experiment[0, look]), int(experiment[1, look])
            cs = sequential_diff(x_c, n, x_t, n)
            cs_stop = cs_stop or (cs is not None and cs.excludes_zero)
            p = two_proportion_ztest(x_c, n, x_t, n).p_value
            z_stop = z_stop or (p is not None and p < 0.05)
        sequential_hits += cs_stop
        naive_hits += z_stop
    return sequential_hits / experiments, naive_hits / experiments


def test_peeking_keeps_the_error_rate_where_naive_z_tests_do_not() -> None:
    sequential_rate, naive_rate = _peeking_false_positive_rates(
        experiments=300, peeks=20, per_peek=250, rate=0.1
    )
    assert sequential_rate <= 0.05 + 0.02
    # 20 looks at a 5% test: the naive procedure stops wrongly far more often than 5%.
    assert naive_rate > 0.10
    assert naive_rate > 2 * sequential_rate


def test_covers_a_real_difference_at_every_look() -> None:
    # A/B with a true difference of 2 points: the sequence must contain it at all 20 looks at
    # once in at least 95% of experiments (time-uniform coverage), up to simulation slack.
    rng = np.random.default_rng(7)
    peeks, per_peek, experiments = 20, 250, 300
    control = np.cumsum(rng.binomial(per_peek, 0.10, size=(experiments, peeks)), axis=1)
    treated = np.cumsum(rng.binomial(per_peek, 0.12, size=(experiments, peeks)), axis=1)
    misses = 0
    for c_row, t_row in zip(control, treated, strict=True):
        for look in range(peeks):
            n = per_peek * (look + 1)
            cs = sequential_diff(int(c_row[look]), n, int(t_row[look]), n)
            if cs is not None and not cs.low <= 0.02 <= cs.high:
                misses += 1
                break
    assert misses / experiments <= 0.05 + 0.02


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(0, 0, 0, 0), (0, 0, 3, 10), (3, 10, 0, 0), (0, 10, 0, 10), (10, 10, 7, 7)],
)
def test_undefined_difference_is_none(x1: int, n1: int, x2: int, n2: int) -> None:
    assert sequential_diff(x1, n1, x2, n2) is None


def test_zero_successes_in_one_arm_is_defined() -> None:
    cs = sequential_diff(0, 50, 5, 50)
    assert isinstance(cs, ConfidenceSequence)
    assert all(math.isfinite(v) for v in cs)
    assert sequential_lift(0, 50, 5, 50) is None  # the lift divides by the control's rate
    # The delta method's variance vanishes with p_t = 0: no sequence rather than a zero width.
    assert sequential_lift(5, 50, 0, 50) is None
    lift = sequential_lift(5, 50, 1, 50)
    assert lift is not None
    assert lift.estimate == pytest.approx(-0.8)
    assert lift.low < -0.8 < lift.high


def test_invalid_input_raises() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        sequential_diff(5, 3, 1, 3)
    with pytest.raises(ValueError):  # noqa: PT011
        mixing_rho(0.05, 0)
