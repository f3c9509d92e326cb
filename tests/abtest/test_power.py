"""abtest.power against statsmodels and a textbook example."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail

from abtest.power import SampleSize, sample_size, sample_still_needed


@settings(max_examples=300)
@given(
    st.floats(0.001, 0.9),
    st.floats(-0.9, 2.0).filter(lambda lift: abs(lift) > 0.001),
    st.sampled_from([0.01, 0.05, 0.1]),
    st.sampled_from([0.5, 0.8, 0.9, 0.95]),
    st.sampled_from([0.25, 0.5, 1.0, 2.0, 9.0]),
)
def test_agrees_with_statsmodels(
    baseline: float, lift: float, alpha: float, power: float, ratio: float
) -> None:
    treated = baseline * (1 + lift)
    ours = sample_size(baseline, lift, alpha=alpha, power=power, ratio=ratio)
    if treated > 1.0:
        assert ours is None
        return
    ref = float(
        samplesize_proportions_2indep_onetail(
            baseline - treated, treated, power, ratio=ratio, alpha=alpha
        )
    )
    assert ours is not None
    assert abs(ours.control - ref) < 1.0 + 1e-6 * ref  # ours is the reference rounded up
    assert ours.control >= ref * (1 - 1e-9)
    assert ours.treatment == math.ceil(ours.control * ratio - 1e-9)


def test_textbook_example() -> None:
    # 10% -> 12% (20% relative lift), alpha 0.05 two-sided, power 0.8, by hand: pooled p = 0.11,
    # s0 = sqrt(0.11 * 0.89 * 2) = 0.44249, s1 = sqrt(0.09 + 0.1056) = 0.44227,
    # n = ((1.95996 * 0.44249 + 0.84162 * 0.44227) / 0.02)^2 = 3840.6 -> 3,841 per arm.
    assert sample_size(0.10, 0.20) == SampleSize(3841, 3841)


@pytest.mark.parametrize(("baseline", "lift"), [(0.0, 0.1), (1.0, -0.1), (0.5, 0.0), (0.6, 1.0)])
def test_undetectable_is_none(baseline: float, lift: float) -> None:
    assert sample_size(baseline, lift) is None


def test_still_needed() -> None:
    assert sample_still_needed(1000, 1000, 0.10, 0.20) == SampleSize(2841, 2841)
    assert sample_still_needed(10_000, 10_000, 0.10, 0.20) == SampleSize(0, 0)
    assert sample_still_needed(0, 0, 0.10, 0.20) == SampleSize(3841, 3841)
    assert sample_still_needed(0, 0, 0.0, 0.20) is None
    with pytest.raises(ValueError):  # noqa: PT011
        sample_still_needed(-1, 0, 0.1, 0.2)
