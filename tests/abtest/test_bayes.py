"""abtest.bayes against numerical integration of scipy's Beta posteriors, and edge cases."""

from __future__ import annotations

import math
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import beta

from abtest.bayes import bayes_compare
from tests.abtest.samples import arms


def reference(x_c: int, n_c: int, x_t: int, n_t: int) -> tuple[float, float]:
    """(P(p_t > p_c), E[max(p_c - p_t, 0)]) by quadrature: P = integral of pdf_c * sf_t, and
    E[max(X - Y, 0)] = integral of P(Y <= s < X) ds = integral of cdf_t * sf_c."""
    control, treat = beta(1 + x_c, 1 + n_c - x_c), beta(1 + x_t, 1 + n_t - x_t)
    low = min(control.ppf(1e-15), treat.ppf(1e-15))
    high = max(control.isf(1e-15), treat.isf(1e-15))
    options = {"points": [control.mean(), treat.mean()], "epsabs": 1e-14, "limit": 500}
    chance = integrate.quad(lambda s: control.pdf(s) * treat.sf(s), low, high, **options)[0]
    loss = integrate.quad(lambda s: treat.cdf(s) * control.sf(s), low, high, **options)[0]
    return float(chance), float(loss)


# quad resolves posteriors up to a few thousand trials reliably; narrower ones it can miss.
@settings(max_examples=80, deadline=None)
@given(arms().filter(lambda arm: arm[1] <= 3000), arms().filter(lambda arm: arm[1] <= 3000))
def test_exact_agrees_with_quadrature(control: tuple[int, int], treat: tuple[int, int]) -> None:
    (x_c, n_c), (x_t, n_t) = control, treat
    ours = bayes_compare(x_c, n_c, x_t, n_t)
    chance, loss = reference(x_c, n_c, x_t, n_t)
    assert math.isclose(ours.chance_to_beat_control, chance, rel_tol=1e-7, abs_tol=1e-10)
    assert math.isclose(ours.expected_loss_treatment, loss, rel_tol=1e-7, abs_tol=1e-10)
    mean_diff = (1 + x_t) / (2 + n_t) - (1 + x_c) / (2 + n_c)
    assert math.isclose(ours.expected_loss_control, loss + mean_diff, rel_tol=1e-7, abs_tol=1e-10)


def test_exact_in_closed_form() -> None:
    # p_c ~ Beta(2, 2) against a treatment posterior concentrated at ~7.6e-6 (1 of 261,973):
    # P(p_c < p_t) = E[3 p_t^2 - 2 p_t^3], from the treatment's Beta(2, 261973) moments.
    a, b = 2, 261_973
    m2 = a * (a + 1) / ((a + b) * (a + b + 1))
    m3 = m2 * (a + 2) / (a + b + 2)
    ours = bayes_compare(1, 2, 1, 261_973)
    assert math.isclose(ours.chance_to_beat_control, 3 * m2 - 2 * m3, rel_tol=1e-9)
    assert math.isclose(ours.expected_loss_treatment, 0.5 - a / (a + b), rel_tol=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(20_000, 40_000), st.integers(-1500, 1500))
def test_normal_approximation_beyond_the_limit(successes: int, delta: int) -> None:
    """Where the exact sum gets long the normal approximation takes over: it must agree."""
    trials = 4 * successes
    with patch("abtest.bayes.EXACT_TERMS_LIMIT", 10**9):
        exact = bayes_compare(successes, trials, successes + delta, trials)
    with patch("abtest.bayes.EXACT_TERMS_LIMIT", 0):
        approx = bayes_compare(successes, trials, successes + delta, trials)
    assert math.isclose(approx.chance_to_beat_control, exact.chance_to_beat_control, abs_tol=1e-4)
    assert math.isclose(
        approx.expected_loss_treatment, exact.expected_loss_treatment, rel_tol=1e-2, abs_tol=1e-9
    )


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_t", "n_t"),
    [
        (0, 0, 0, 0),
        (0, 0, 5, 9),
        (0, 10, 0, 10),
        (10, 10, 10, 10),
        (0, 1, 1, 1),
        (3, 10**7, 9, 10**7),
    ],
)
def test_edges_are_defined(x_c: int, n_c: int, x_t: int, n_t: int) -> None:
    ours = bayes_compare(x_c, n_c, x_t, n_t)
    assert all(math.isfinite(v) for v in ours)
    assert 0.0 <= ours.chance_to_beat_control <= 1.0
    assert ours.expected_loss_treatment >= 0.0
    assert ours.expected_loss_control >= 0.0


def test_symmetric_arms_are_a_coin_flip() -> None:
    ours = bayes_compare(40, 400, 40, 400)
    assert math.isclose(ours.chance_to_beat_control, 0.5, abs_tol=1e-12)
    assert math.isclose(ours.expected_loss_treatment, ours.expected_loss_control, abs_tol=1e-12)


def test_rejects_invalid_counts() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        bayes_compare(3, 2, 0, 1)
