"""Peek-safe comparison of two conversion rates: an asymptotic confidence sequence (CS).

A fixed-horizon interval covers the true difference with 95% probability at *one* pre-planned
look. Analysts look every day, and an automatic winner rule looks at every report: with repeated
looks the chance that some 95% interval excludes a true difference of 0 grows far beyond 5%.
A confidence sequence covers the true difference at *every* sample size simultaneously, so it
may be looked at as often as one likes and the experiment stopped at any time.

We use the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences" (2023), eq. 9, with the
normal-mixture boundary of Howard et al. (2021), as GrowthBook's gbstats
``SequentialTwoSidedTTest`` does:

    halfwidth = sqrt(s2) * sqrt(2 (n rho^2 + 1) ln(sqrt(n rho^2 + 1) / alpha) / (n rho)^2)

where n is the combined sample size of both arms, s2 the per-observation variance
(SE^2 * n, with the unpooled SE^2 = p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c) and rho the mixing
parameter. rho is chosen so the sequence is tightest at n = N, the tuning parameter (gbstats'
``sequential_tuning_parameter``, default 5000), by their eq. 161:

    rho = sqrt((-2 ln alpha + ln(-2 ln alpha + 1)) / N)

The always-valid p-value is the same boundary solved for alpha at fixed rho:

    p = min(1, sqrt(n rho^2 + 1) exp(-(n rho)^2 d^2 / (2 s2 (n rho^2 + 1))))

so p < alpha exactly when the CS (with rho tuned for that alpha) excludes 0: the decision rule
"the CS excludes 0" and "p < alpha" agree. A stream of such p-values may be min-accumulated over
looks; each single one is already valid at any stopping time, which is what Holm needs.

Pure stdlib. Undefined results (an empty arm, zero variance, a control rate of 0 for the lift)
are ``None``, never NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from abtest.distributions import check_confidence
from abtest.stats import check_counts

DEFAULT_TUNING = 5000.0


class ConfidenceSequence(NamedTuple):
    """A peek-safe estimate: the point estimate, the CS bounds at this look, and the always-valid
    p-value of "no difference"."""

    estimate: float
    low: float
    high: float
    p_value: float

    @property
    def excludes_zero(self) -> bool:
        """The decision rule: the sequence says the arms differ."""
        return self.low > 0.0 or self.high < 0.0


def mixing_rho(alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """The normal mixture's rho that makes the CS tightest at ``tuning`` observations
    (WS+23 eq. 161)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    if not tuning > 0.0:
        raise ValueError(f"the tuning parameter must be positive, got {tuning!r}")
    two_log = -2.0 * math.log(alpha)
    return math.sqrt((two_log + math.log(two_log + 1.0)) / tuning)


def halfwidth(s2: float, n: int, alpha: float, rho: float) -> float:
    """Half-width of the two-sided asymptotic CS (WS+23 eq. 9) for per-observation variance
    ``s2`` after ``n`` observations."""
    if n < 1 or s2 < 0.0:
        raise ValueError("need n >= 1 and a non-negative variance")
    u = n * rho * rho
    log_term = math.log(math.sqrt(u + 1.0) / alpha)
    return math.sqrt(s2) * math.sqrt(2.0 * (u + 1.0) * log_term / (n * u))


def always_valid_p(estimate: float, s2: float, n: int, rho: float) -> float:
    """The mixture boundary solved for alpha (see the module docstring); 1 when s2 is 0 and the
    estimate is 0, and 0 when s2 is 0 and it is not."""
    u = n * rho * rho
    if s2 <= 0.0:
        return 1.0 if estimate == 0.0 else 0.0
    log_p = 0.5 * math.log(u + 1.0) - n * u * estimate * estimate / (2.0 * s2 * (u + 1.0))
    return min(1.0, math.exp(log_p))


def sequential_diff(
    x_control: int,
    n_control: int,
    x_treat: int,
    n_treat: int,
    confidence: float = 0.95,
    tuning: float = DEFAULT_TUNING,
) -> ConfidenceSequence | None:
    """Confidence sequence for p_t - p_c. None when an arm is empty or both rates are 0 or 1
    (no variance: the asymptotic sequence says nothing there)."""
    check_counts(x_control, n_control)
    check_counts(x_treat, n_treat)
    check_confidence(confidence)
    if n_control == 0 or n_treat == 0:
        return None
    p_c, p_t = x_control / n_control, x_treat / n_treat
    se2 = p_c * (1.0 - p_c) / n_control + p_t * (1.0 - p_t) / n_treat
    return _sequence(p_t - p_c, se2, n_control + n_treat, confidence, tuning)


def sequential_lift(
    x_control: int,
    n_control: int,
    x_treat: int,
    n_treat: int,
    confidence: float = 0.95,
    tuning: float = DEFAULT_TUNING,
) -> ConfidenceSequence | None:
    """Confidence sequence for the relative lift p_t / p_c - 1, with the delta-method variance
    (as ``stats.relative_lift`` and gbstats for ``difference_type="relative"``). None when an arm
    is empty, the control has no successes, or the variance is 0."""
    check_counts(x_control, n_control)
    check_counts(x_treat, n_treat)
    check_confidence(confidence)
    if n_control == 0 or n_treat == 0 or x_control == 0:
        return None
    p_c, p_t = x_control / n_control, x_treat / n_treat
    var_c = p_c * (1.0 - p_c) / n_control
    var_t = p_t * (1.0 - p_t) / n_treat
    se2 = var_t / p_c**2 + var_c * p_t**2 / p_c**4
    return _sequence(p_t / p_c - 1.0, se2, n_control + n_treat, confidence, tuning)


def _sequence(
    estimate: float, se2: float, n: int, confidence: float, tuning: float
) -> ConfidenceSequence | None:
    if se2 <= 0.0:
        return None
    alpha = 1.0 - confidence
    rho = mixing_rho(alpha, tuning)
    s2 = se2 * n  # the paper's per-observation variance, as gbstats passes it
    half = halfwidth(s2, n, alpha, rho)
    return ConfidenceSequence(
        estimate, estimate - half, estimate + half, always_valid_p(estimate, s2, n, rho)
    )
