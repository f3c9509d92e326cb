"""Distribution functions the statistics need, in pure Python (stdlib ``math`` and ``statistics``).

scipy would give these, but the statistics module is pure and runs in the API process: scipy and
statsmodels are dev-only references that the tests compare against.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_STANDARD_NORMAL = NormalDist()
# Relative accuracy at which the incomplete-gamma series and continued fraction stop: a few ulps.
_EPS = 1e-16
_MAX_ITERATIONS = 100_000
# Lentz's algorithm replaces zero denominators by this tiny number (Numerical Recipes 6.2).
_TINY = 1e-300


def check_confidence(confidence: float) -> None:
    """Raise ValueError unless 0 < confidence < 1 (1 would need an infinite quantile)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def normal_quantile(probability: float) -> float:
    """The standard normal quantile (inverse CDF), Wichura's AS241 via ``statistics.NormalDist``."""
    return _STANDARD_NORMAL.inv_cdf(probability)


def two_sided_critical_value(confidence: float) -> float:
    """z such that a standard normal falls in [-z, z] with the given probability."""
    check_confidence(confidence)
    return normal_quantile(1.0 - (1.0 - confidence) / 2.0)


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z; ``erfc`` keeps full relative precision in the tail,
    where ``1 - cdf`` would round tiny p-values to 0."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def chi2_sf(statistic: float, df: int) -> float:
    """Survival function P(X >= statistic) of a chi-square with ``df`` degrees of freedom.

    It is the regularized upper incomplete gamma Q(df/2, statistic/2) (Numerical Recipes, 3rd ed.,
    section 6.2: series below a + 1, Lentz continued fraction above).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df!r}")
    if statistic <= 0.0:
        return 1.0
    return regularized_gamma_q(df / 2.0, statistic / 2.0)


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a) for a > 0, x >= 0."""
    if x <= 0.0:
        return 1.0
    if x < a + 1.0:
        # The series converges fast here, and Q is not small, so 1 - P loses no precision.
        return max(0.0, 1.0 - _gamma_p_series(a, x))
    return min(1.0, _gamma_q_continued_fraction(a, x))


def _log_prefactor(a: float, x: float) -> float:
    """log(x^a e^-x / Gamma(a)), shared by the series and the continued fraction."""
    return a * math.log(x) - x - math.lgamma(a)


def _gamma_p_series(a: float, x: float) -> float:
    """P(a, x) by its series sum x^n / (a (a+1) ... (a+n)) (NR ``gser``)."""
    term = 1.0 / a
    total = term
    denominator = a
    for _ in range(_MAX_ITERATIONS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(_log_prefactor(a, x))


def _gamma_q_continued_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, evaluated with modified Lentz (NR ``gcf``)."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(_log_prefactor(a, x)) * h
