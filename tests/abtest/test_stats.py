"""abtest.stats against the reference implementations (statsmodels, scipy), published examples
and edge cases."""

from __future__ import annotations

import math
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2, chi2_contingency, chisquare
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from abtest.distributions import chi2_sf
from abtest.distributions import two_sided_critical_value as two_sided_z
from abtest.stats import (
    Interval,
    chi_square_arms,
    holm,
    newcombe_diff_interval,
    relative_lift,
    srm_check,
    two_proportion_ztest,
    wilson_interval,
)
from tests.abtest.samples import arms

# Our quantiles come from statistics.NormalDist, the references' from scipy: both are accurate to a
# few ulps, so agreement is expected to ~1e-12; 1e-9 leaves room for different operation orders.
REL = 1e-9
ABS = 1e-12

confidences = st.sampled_from([0.8, 0.9, 0.95, 0.99, 0.999])


def close(ours: float, ref: float) -> bool:
    return math.isclose(ours, ref, rel_tol=REL, abs_tol=ABS)


def assert_finite(*values: float | None) -> None:
    for value in values:
        assert value is None or math.isfinite(value)


# --- Wilson -------------------------------------------------------------------------------------


@settings(max_examples=500)
@given(arms(min_trials=1), confidences)
def test_wilson_agrees_with_statsmodels(arm: tuple[int, int], confidence: float) -> None:
    x, n = arm
    ours = wilson_interval(x, n, confidence)
    low, high = proportion_confint(x, n, alpha=1 - confidence, method="wilson")
    assert ours is not None
    assert close(ours.low, float(low))
    assert close(ours.high, float(high))
    assert 0.0 <= ours.low <= x / n <= ours.high <= 1.0


def test_wilson_published_example() -> None:
    # Newcombe (1998), table I, example (a): 81/263 -> 0.2553 to 0.3662 (method 3, Wilson).
    ci = wilson_interval(81, 263)
    assert ci is not None
    assert round(ci.low, 4) == 0.2553
    assert round(ci.high, 4) == 0.3662


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) is None
    zero = wilson_interval(0, 1)
    assert zero is not None
    assert zero.low == 0.0
    assert 0.0 < zero.high < 1.0
    full = wilson_interval(7, 7)
    assert full is not None
    assert full.high == 1.0
    assert 0.0 < full.low < 1.0


@pytest.mark.parametrize(
    ("x", "n", "confidence"), [(-1, 3, 0.95), (4, 3, 0.95), (1, 3, 1.0), (1, 3, 0.0)]
)
def test_wilson_rejects_invalid_input(x: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the bad value
        wilson_interval(x, n, confidence)


# --- Newcombe -----------------------------------------------------------------------------------


@settings(max_examples=500)
@given(arms(min_trials=1), arms(min_trials=1), confidences)
def test_newcombe_agrees_with_statsmodels(
    control: tuple[int, int], treatment: tuple[int, int], confidence: float
) -> None:
    (x1, n1), (x2, n2) = control, treatment
    ours = newcombe_diff_interval(x1, n1, x2, n2, confidence)
    # statsmodels' diff is its first arm minus its second: give it the treatment first.
    low, high = confint_proportions_2indep(
        x2, n2, x1, n1, compare="diff", method="newcomb", alpha=1 - confidence
    )
    assert ours is not None
    assert close(ours.low, float(low))
    assert close(ours.high, float(high))
    assert -1.0 <= ours.low <= x2 / n2 - x1 / n1 <= ours.high <= 1.0


def test_newcombe_published_example() -> None:
    # Newcombe (1998), table II, example (a): 56/70 - 48/80 -> 0.0524 to 0.3339 (method 10).
    ci = newcombe_diff_interval(48, 80, 56, 70)
    assert ci is not None
    assert round(ci.low, 4) == 0.0524
    assert round(ci.high, 4) == 0.3339


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(0, 0, 1, 5), (1, 5, 0, 0), (0, 0, 0, 0)])
def test_newcombe_empty_arm_is_none(x1: int, n1: int, x2: int, n2: int) -> None:
    assert newcombe_diff_interval(x1, n1, x2, n2) is None


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(0, 10, 0, 10), (10, 10, 10, 10), (0, 1, 1, 1)])
def test_newcombe_extremes_are_finite(x1: int, n1: int, x2: int, n2: int) -> None:
    ci = newcombe_diff_interval(x1, n1, x2, n2)
    assert ci is not None
    assert_finite(*ci)
    assert isinstance(ci, Interval)


# --- chi-square survival function ---------------------------------------------------------------


@settings(max_examples=1000)
@given(
    st.one_of(st.integers(1, 10), st.integers(1, 10_000)),
    st.floats(0.0, 4.0, allow_nan=False),
)
def test_chi2_sf_agrees_with_scipy(df: int, scale: float) -> None:
    statistic = scale * (df + 10)  # spans both the series and the continued-fraction branch
    ref = float(chi2.sf(statistic, df))
    # lgamma of a large shape carries ~1e-11 relative error into the prefactor; scipy has the same.
    assert math.isclose(chi2_sf(statistic, df), ref, rel_tol=1e-9, abs_tol=1e-300)


def test_chi2_sf_edges() -> None:
    assert chi2_sf(0.0, 1) == 1.0
    assert chi2_sf(-1.0, 3) == 1.0
    assert chi2_sf(1e6, 1) == 0.0  # underflows to a finite 0, never NaN
    with pytest.raises(ValueError):  # noqa: PT011
        chi2_sf(1.0, 0)


# --- two-proportion z test ----------------------------------------------------------------------


@settings(max_examples=500)
@given(arms(min_trials=1), arms(min_trials=1))
def test_ztest_agrees_with_statsmodels(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    (x1, n1), (x2, n2) = control, treatment
    ours = two_proportion_ztest(x1, n1, x2, n2)
    if x1 + x2 in (0, n1 + n2):
        assert ours.z is None
        assert ours.p_value is None
        return
    z, p = proportions_ztest([x1, x2], [n1, n2])
    assert ours.z is not None
    assert ours.p_value is not None
    assert close(ours.z, -float(z))  # statsmodels tests p1 - p2, we report p2 - p1
    assert math.isclose(ours.p_value, float(p), rel_tol=1e-8, abs_tol=1e-300)


def test_ztest_squared_is_chi_square() -> None:
    ztest = two_proportion_ztest(83, 86, 90, 93)
    chi = chi_square_arms([83, 90], [86, 93])
    assert ztest.z is not None
    assert chi.statistic is not None
    assert math.isclose(ztest.z**2, chi.statistic, rel_tol=1e-12)
    assert ztest.p_value is not None
    assert chi.p_value is not None
    assert math.isclose(ztest.p_value, chi.p_value, rel_tol=1e-9)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"), [(0, 0, 1, 2), (1, 2, 0, 0), (0, 10, 0, 20), (5, 5, 9, 9)]
)
def test_ztest_undefined_is_none(x1: int, n1: int, x2: int, n2: int) -> None:
    assert two_proportion_ztest(x1, n1, x2, n2) == (None, None)


# --- chi-square across arms ---------------------------------------------------------------------


@settings(max_examples=500)
@given(st.lists(arms(), min_size=2, max_size=8))
def test_chi_square_agrees_with_scipy(arm_list: list[tuple[int, int]]) -> None:
    successes = [x for x, _ in arm_list]
    trials = [n for _, n in arm_list]
    ours = chi_square_arms(successes, trials)
    kept = [(x, n) for x, n in arm_list if n > 0]
    total_x = sum(x for x, _ in kept)
    total_n = sum(n for _, n in kept)
    if len(kept) < 2 or total_x in (0, total_n):
        assert ours == (None, None, None)
        return
    table = [[x for x, _ in kept], [n - x for x, n in kept]]
    ref = chi2_contingency(table, correction=False)
    assert ours.df == ref.dof
    assert ours.statistic is not None
    assert ours.p_value is not None
    assert math.isclose(ours.statistic, float(ref.statistic), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(ours.p_value, float(ref.pvalue), rel_tol=1e-8, abs_tol=1e-14)


def test_chi_square_r_prop_test_smokers() -> None:
    # R: prop.test(smokers, patients): X-squared = 12.6, df = 3, p-value = 0.005585
    ours = chi_square_arms([83, 90, 129, 70], [86, 93, 136, 82])
    assert ours.statistic is not None
    assert ours.p_value is not None
    assert round(ours.statistic, 1) == 12.6
    assert ours.df == 3
    assert round(ours.p_value, 6) == 0.005585


def test_chi_square_scipy_docstring_table() -> None:
    # scipy chi2_contingency docstring: [[10, 10, 20], [20, 20, 20]] -> 2.7777..., p 0.24935, dof 2
    ours = chi_square_arms([10, 10, 20], [30, 30, 40])
    assert ours.statistic is not None
    assert ours.p_value is not None
    assert math.isclose(ours.statistic, 2.7777777777777777, rel_tol=1e-12)
    assert ours.df == 2
    assert math.isclose(ours.p_value, 0.24935220877729619, rel_tol=1e-9)


def test_chi_square_edges() -> None:
    assert chi_square_arms([], []) == (None, None, None)
    assert chi_square_arms([3], [10]) == (None, None, None)
    assert chi_square_arms([3, 0], [10, 0]) == (None, None, None)  # one arm empty
    assert chi_square_arms([0, 0, 0], [5, 6, 7]) == (None, None, None)
    assert chi_square_arms([5, 6], [5, 6]) == (None, None, None)
    assert chi_square_arms([1, 0, 2], [4, 0, 3]).df == 1  # the empty arm is left out
    with pytest.raises(ValueError):  # noqa: PT011
        chi_square_arms([1, 2], [3])


# --- relative lift ------------------------------------------------------------------------------


def _numeric_delta_method(x_c: int, n_c: int, x_t: int, n_t: int, z: float) -> tuple[float, float]:
    """The generic delta method with a central finite-difference gradient of f(p_c, p_t) =
    p_t / p_c - 1: an independent derivation of the closed form in relative_lift."""
    p_c, p_t = x_c / n_c, x_t / n_t
    h = 1e-6 * p_c

    def ratio(a: float, b: float) -> float:
        # The "- 1" of f is left out: it does not change the gradient, and subtracting it before
        # differencing would cancel away the digits of a small ratio.
        return b / a

    d_c = (ratio(p_c + h, p_t) - ratio(p_c - h, p_t)) / (2 * h)
    d_t = 1.0 / p_c  # f is linear in p_t
    variance = d_c**2 * p_c * (1 - p_c) / n_c + d_t**2 * p_t * (1 - p_t) / n_t
    return ratio(p_c, p_t) - 1.0, z * math.sqrt(variance)


@settings(max_examples=300)
@given(arms(min_trials=1), arms(min_trials=1), confidences)
def test_relative_lift_is_the_delta_method(
    control: tuple[int, int], treatment: tuple[int, int], confidence: float
) -> None:
    (x_c, n_c), (x_t, n_t) = control, treatment
    ours = relative_lift(x_c, n_c, x_t, n_t, confidence)
    if x_c == 0:
        assert ours == (None, None, None)
        return
    z = float(two_sided_z(confidence))
    lift, half = _numeric_delta_method(x_c, n_c, x_t, n_t, z)
    assert ours.lift is not None
    assert ours.low is not None
    assert ours.high is not None
    assert math.isclose(ours.lift, lift, rel_tol=1e-12, abs_tol=1e-15)
    # high - lift cancels digits when lift is near -1 and the interval narrow: hence 1e-6.
    assert math.isclose(ours.high - ours.lift, half, rel_tol=1e-6, abs_tol=1e-12)
    assert math.isclose(ours.lift - ours.low, half, rel_tol=1e-6, abs_tol=1e-12)
    assert ours.lift >= -1.0


def test_relative_lift_worked_example() -> None:
    # 100/1000 vs 120/1000: lift 0.2; Var = 0.12*0.88/1000/0.01 + 0.09/1000*0.0144/0.0001
    ours = relative_lift(100, 1000, 120, 1000)
    variance = 0.12 * 0.88 / 1000 / 0.01 + 0.1 * 0.9 / 1000 * 0.0144 / 0.0001
    half = 1.959963984540054 * math.sqrt(variance)
    assert ours.lift is not None
    assert ours.low is not None
    assert ours.high is not None
    assert math.isclose(ours.lift, 0.2, rel_tol=1e-12)
    assert math.isclose(ours.low, 0.2 - half, rel_tol=1e-12)
    assert math.isclose(ours.high, 0.2 + half, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_t", "n_t"), [(0, 0, 1, 2), (1, 2, 0, 0), (0, 10, 3, 10), (0, 10, 0, 10)]
)
def test_relative_lift_undefined_is_none(x_c: int, n_c: int, x_t: int, n_t: int) -> None:
    assert relative_lift(x_c, n_c, x_t, n_t) == (None, None, None)


def test_relative_lift_without_variance_is_a_point() -> None:
    assert relative_lift(5, 5, 9, 9) == (0.0, 0.0, 0.0)
    assert relative_lift(3, 10, 0, 10).lift == -1.0


# --- sample-ratio mismatch ----------------------------------------------------------------------


@st.composite
def split_counts(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    k = draw(st.integers(2, 6))
    weights = draw(st.lists(st.floats(0.01, 100.0), min_size=k, max_size=k))
    counts = draw(st.lists(st.integers(0, 2_000_000), min_size=k, max_size=k))
    return counts, weights


@settings(max_examples=500)
@given(split_counts())
def test_srm_agrees_with_scipy(case: tuple[list[int], list[float]]) -> None:
    counts, weights = case
    ours = srm_check(counts, weights)
    total = sum(counts)
    if total == 0:
        assert ours == (None, None, None, False)
        return
    expected = [total * w / sum(weights) for w in weights]
    ref = chisquare(counts, expected)
    assert ours.df == len(counts) - 1
    assert ours.statistic is not None
    assert ours.p_value is not None
    assert math.isclose(ours.statistic, float(ref.statistic), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(ours.p_value, float(ref.pvalue), rel_tol=1e-8, abs_tol=1e-14)
    assert ours.mismatch == (float(ref.pvalue) < 0.001)


def test_srm_flags_and_passes() -> None:
    assert not srm_check([5000, 5000], [0.5, 0.5]).mismatch
    assert not srm_check([1000, 4500, 4500], [10, 45, 45]).mismatch
    flagged = srm_check([5000, 5300], [1, 1])  # chi2 = 8.74, p = 0.0031: not yet
    assert not flagged.mismatch
    flagged = srm_check([5000, 5500], [1, 1])  # chi2 = 23.8, p ~ 1e-6
    assert flagged.mismatch
    assert flagged.p_value is not None
    assert flagged.p_value < 1e-5


def test_srm_edges() -> None:
    assert srm_check([0, 0], [1, 1]) == (None, None, None, False)
    assert srm_check([7, 0], [1, 0]) == (None, None, None, False)  # one arm with weight
    assert srm_check([7, 1], [1, 0]) == (None, None, 0.0, True)  # traffic where none should go
    assert srm_check([7, 0, 9], [1, 0, 1]).df == 1
    invalid: list[tuple[list[int], list[float]]] = [
        ([1], [1.0, 1.0]),
        ([1, -1], [1, 1]),
        ([1, 1], [0, 0]),
        ([1, 1], [1, -1]),
    ]
    for counts, weights in invalid:
        with pytest.raises(ValueError):  # noqa: PT011
            srm_check(counts, weights)


# --- Holm ---------------------------------------------------------------------------------------


@settings(max_examples=500)
@given(
    st.lists(st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.01, 0.05, 1.0]), min_size=1, max_size=12)
)
def test_holm_agrees_with_statsmodels(p_values: list[float]) -> None:
    ours = holm(p_values)
    # multipletests runs gc.collect() on every call (~50-150 ms here); the collection changes no
    # result, so it is skipped to afford many examples.
    with patch("gc.collect"):
        ref = multipletests(p_values, method="holm")[1]
    assert len(ours) == len(p_values)
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine is not None
        assert math.isclose(mine, float(theirs), rel_tol=1e-12, abs_tol=1e-15)


def test_holm_keeps_undefined_and_order() -> None:
    assert holm([]) == []
    assert holm([None, 0.01, None, 0.04, 0.03]) == [None, 0.03, None, 0.06, 0.06]
    with pytest.raises(ValueError):  # noqa: PT011
        holm([1.5])
