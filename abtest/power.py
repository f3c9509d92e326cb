"""Sample size for the pooled two-proportion z test to detect a target relative lift.

Pure stdlib. Agrees with statsmodels ``samplesize_proportions_2indep_onetail`` (two-sided).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from abtest.distributions import normal_quantile


class SampleSize(NamedTuple):
    """Trials needed in the control and the treatment arm."""

    control: int
    treatment: int


def sample_size(
    baseline_rate: float,
    relative_lift: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> SampleSize | None:
    """Trials per arm for a two-sided pooled z test at level ``alpha`` to detect the treatment rate
    p_t = p_c (1 + relative_lift) with probability ``power``; the treatment gets ``ratio`` times the
    control's trials.

    n_c = ((z_{1-alpha/2} s0 + z_power s1) / (p_t - p_c))^2 with the null standard deviation
    s0 = sqrt(p (1 - p) (1 + 1/ratio)) at the pooled p = (p_c + ratio p_t) / (1 + ratio), and the
    alternative's s1 = sqrt(p_c (1 - p_c) + p_t (1 - p_t) / ratio) (Fleiss, Levin and Paik 2003,
    4.14; statsmodels' formula). Rounded up.

    None when no sample can do it: a baseline of 0 or 1 (no variance to work with), a lift of 0,
    or a target rate outside [0, 1].
    """
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0 or not ratio > 0.0:
        raise ValueError("need 0 < alpha < 1, 0 < power < 1 and ratio > 0")
    p_c = baseline_rate
    p_t = p_c * (1.0 + relative_lift)
    if not (0.0 < p_c < 1.0 and 0.0 <= p_t <= 1.0) or p_t == p_c:
        return None
    pooled = (p_c + ratio * p_t) / (1.0 + ratio)
    s0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 + 1.0 / ratio))
    s1 = math.sqrt(p_c * (1.0 - p_c) + p_t * (1.0 - p_t) / ratio)
    z_alpha = normal_quantile(1.0 - alpha / 2.0)
    z_power = normal_quantile(power)
    # statsmodels clips a negative numerator (power below 50%) to 0: so do we.
    n_c = (max(z_alpha * s0 + z_power * s1, 0.0) / (p_t - p_c)) ** 2
    # A float a hair above an integer (from rounding) should not cost a whole extra trial.
    control = math.ceil(n_c - 1e-9)
    return SampleSize(control, math.ceil(control * ratio - 1e-9))


def sample_still_needed(
    n_control: int,
    n_treatment: int,
    baseline_rate: float,
    relative_lift: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> SampleSize | None:
    """Trials still to collect in each arm before the experiment can detect the target lift, with
    the arms kept in their current ratio (1 if either is empty). None as for ``sample_size``."""
    if n_control < 0 or n_treatment < 0:
        raise ValueError("trial counts must not be negative")
    ratio = n_treatment / n_control if n_control > 0 and n_treatment > 0 else 1.0
    needed = sample_size(baseline_rate, relative_lift, alpha=alpha, power=power, ratio=ratio)
    if needed is None:
        return None
    return SampleSize(max(0, needed.control - n_control), max(0, needed.treatment - n_treatment))
