"""abtest.stats against the reference implementations (statsmodels, scipy), published examples
and edge cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from abtest.stats import Interval, newcombe_diff_interval, wilson_interval

# Our quantiles come from statistics.NormalDist, the references' from scipy: both are accurate to a
# few ulps, so agreement is expected to ~1e-12; 1e-9 leaves room for different operation orders.
REL = 1e-9
ABS = 1e-12

confidences = st.sampled_from([0.8, 0.9, 0.95, 0.99, 0.999])


@st.composite
def arms(draw: st.DrawFn, min_trials: int = 0) -> tuple[int, int]:
    """(successes, trials), mixing tiny samples (where edge cases live) with large ones."""
    trials = draw(
        st.one_of(st.integers(min_trials, 20), st.integers(max(min_trials, 1), 10_000_000))
    )
    successes = draw(
        st.one_of(
            st.integers(0, trials), st.sampled_from([0, trials]), st.integers(0, min(trials, 5))
        )
    )
    return successes, trials


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
