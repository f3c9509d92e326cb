"""Bayesian comparison of two conversion rates with Beta(1, 1) (uniform) priors.

Each arm's posterior is Beta(1 + successes, 1 + failures). Chance to beat control is
P(p_t > p_c); expected loss is the rate given up on average by shipping an arm when the other one
is in fact better (Stucchio 2015, "Bayesian A/B testing at VWO").

Both are computed exactly with Evan Miller's closed form ("Formulas for Bayesian A/B testing",
2015), a sum with as many terms as the smallest posterior parameter, so it stays cheap for low
conversion rates. When even the smallest parameter exceeds ``EXACT_TERMS_LIMIT`` the posteriors
are close to normal and the normal approximation is used instead (its error there is far below
the Monte Carlo noise of the usual simulation approach). Pure stdlib; the tests compare with
numerical integration of scipy's Beta distribution.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from abtest.distributions import normal_two_sided_p

EXACT_TERMS_LIMIT = 20_000


class BayesComparison(NamedTuple):
    """Chance that the treatment's rate beats the control's, and the expected loss (in absolute
    rate) of shipping the treatment and of keeping the control."""

    chance_to_beat_control: float
    expected_loss_treatment: float
    expected_loss_control: float


def bayes_compare(x_control: int, n_control: int, x_treat: int, n_treat: int) -> BayesComparison:
    """Compare two arms under Beta(1, 1) priors. Always defined: an arm without trials keeps its
    uniform prior (so two empty arms give a chance of 0.5)."""
    for x, n in ((x_control, n_control), (x_treat, n_treat)):
        if not 0 <= x <= n:
            raise ValueError(f"need 0 <= successes <= trials, got {x!r} of {n!r}")
    a_c, b_c = 1 + x_control, 1 + n_control - x_control
    a_t, b_t = 1 + x_treat, 1 + n_treat - x_treat
    if min(a_c, b_c, a_t, b_t) > EXACT_TERMS_LIMIT:
        return _normal_approximation(a_c, b_c, a_t, b_t)
    chance = _prob_second_greater(a_c, b_c, a_t, b_t)
    mean_c, mean_t = a_c / (a_c + b_c), a_t / (a_t + b_t)
    # E[max(p_c - p_t, 0)] = E[p_c 1{p_c > p_t}] - E[p_t 1{p_c > p_t}]; p Beta(a, b) weighted by
    # p is mean * Beta(a + 1, b), which turns both terms into probabilities of the same kind.
    loss_t = mean_c * (1.0 - _prob_second_greater(a_c + 1, b_c, a_t, b_t)) - mean_t * (
        1.0 - _prob_second_greater(a_c, b_c, a_t + 1, b_t)
    )
    loss_t = max(0.0, loss_t)  # it is an expectation of a non-negative number; rounding aside
    loss_c = max(0.0, loss_t + mean_t - mean_c)
    return BayesComparison(_clip01(chance), loss_t, loss_c)


def _prob_second_greater(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X2 > X1) for independent X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), integer parameters.

    Miller's sum runs over a2 terms; by the symmetries X > Y <=> 1 - X < 1 - Y and
    P(X2 > X1) = 1 - P(X1 > X2) it can run over a1, b1 or b2 instead: take the shortest.
    """
    # (terms, complement?, arguments of the sum)
    forms: list[tuple[int, bool, tuple[int, int, int, int]]] = [
        (a2, False, (a1, b1, a2, b2)),
        (a1, True, (a2, b2, a1, b1)),
        (b1, False, (b2, a2, b1, a1)),
        (b2, True, (b1, a1, b2, a2)),
    ]
    _, complement, args = min(forms, key=lambda form: form[0])
    total = _miller_sum(*args)
    return 1.0 - total if complement else total


def _miller_sum(a1: int, b1: int, a2: int, b2: int) -> float:
    """Sum over i < a2 of B(a1 + i, b1 + b2) / ((b2 + i) B(1 + i, b2) B(a1, b1)) (Miller 2015).

    Consecutive terms have the ratio (a1 + i)(b2 + i) / ((a1 + b1 + b2 + i)(1 + i)), so the terms
    are built by that recurrence in log space (the first can underflow while later ones do not).
    """
    log_term = _log_beta(a1, b1 + b2) - _log_beta(a1, b1)
    log_terms = [log_term]
    for i in range(a2 - 1):
        log_term += math.log((a1 + i) * (b2 + i)) - math.log((a1 + b1 + b2 + i) * (1 + i))
        log_terms.append(log_term)
    peak = max(log_terms)
    return math.exp(peak) * math.fsum(math.exp(t - peak) for t in log_terms)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _normal_approximation(a_c: int, b_c: int, a_t: int, b_t: int) -> BayesComparison:
    """Treat p_t - p_c as normal with the posteriors' means and variances: for D ~ N(m, s^2),
    P(D > 0) = Phi(m / s) and E[max(-D, 0)] = s phi(m / s) - m Phi(-m / s)."""
    mean_c, var_c = _beta_moments(a_c, b_c)
    mean_t, var_t = _beta_moments(a_t, b_t)
    m, s = mean_t - mean_c, math.sqrt(var_c + var_t)
    u = m / s
    phi = math.exp(-u * u / 2.0) / math.sqrt(2.0 * math.pi)
    upper = normal_two_sided_p(u) / 2.0  # Phi(-|u|), accurate in the tail
    chance = 1.0 - upper if u >= 0 else upper
    loss_t = max(0.0, s * phi - m * (1.0 - chance))
    loss_c = max(0.0, loss_t + m)
    return BayesComparison(chance, loss_t, loss_c)


def _beta_moments(a: int, b: int) -> tuple[float, float]:
    total = a + b
    return a / total, a * b / (total * total * (total + 1))


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))
