"""abtest.costs: unit costs in Decimal, incremental conversions against the control."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abtest.costs import (
    MONEY_PLACES,
    arm_costs,
    cost_per,
    cost_per_incremental,
    incremental_conversions,
)
from abtest.counts import ArmCounts


def arm(
    variant: str, assigned: int, converted: int, cost: str = "0", messages: int = 0
) -> ArmCounts:
    return ArmCounts(
        variant=variant,
        assigned=assigned,
        sent=assigned,
        delivered=assigned,
        clicked=converted,
        converted=converted,
        messages=messages,
        cost=Decimal(cost),
    )


def test_worked_example() -> None:
    # 10,000 customers at 0.045 per SMS, 2 messages each: 900.00; 500 converted (5%) against a
    # holdout converting 3% -> 200 incremental conversions at 4.50 each.
    variant = arm("sms", 10_000, 500, "900.00", messages=20_000)
    holdout = arm("holdout", 5_000, 150)
    costs = arm_costs(variant, holdout)
    assert costs.total == Decimal("900.0000")
    assert costs.per_message == Decimal("0.0450")
    assert costs.per_sent == Decimal("0.0900")
    assert costs.per_conversion == Decimal("1.8000")
    assert costs.incremental_conversions == pytest.approx(200.0)
    assert costs.per_incremental_conversion == Decimal("4.5000")


def test_rounding_is_half_up_to_four_places() -> None:
    assert cost_per(Decimal("1"), 3) == Decimal("0.3333")
    assert cost_per(Decimal("0.00005"), 1) == Decimal("0.0001")
    assert cost_per(Decimal("2"), 3) == Decimal("0.6667")


def test_undefined_costs_are_none() -> None:
    empty = arm("a", 0, 0, "10")
    costs = arm_costs(empty, arm("c", 100, 5))
    assert costs.per_sent is None
    assert costs.per_conversion is None
    assert costs.incremental_conversions is None
    assert costs.per_incremental_conversion is None
    variant = arm("b", 100, 3, "10")
    assert incremental_conversions(variant, None) is None
    assert cost_per_incremental(variant, None) is None
    # worse than (or equal to) the control: no incremental conversion to pay for
    assert cost_per_incremental(variant, arm("c", 100, 3)) is None
    assert cost_per_incremental(variant, arm("c", 100, 9)) is None
    with pytest.raises(ValueError):  # noqa: PT011
        cost_per(Decimal(1), -1)


@settings(max_examples=200)
@given(
    st.integers(1, 10**7),
    st.integers(1, 10**7),
    st.data(),
    st.decimals(min_value=0, max_value=10**7, places=2),
)
def test_incremental_definition(n_t: int, n_c: int, data: st.DataObject, cost: Decimal) -> None:
    x_t = data.draw(st.integers(0, n_t))
    x_c = data.draw(st.integers(0, n_c))
    variant, control = arm("t", n_t, x_t, str(cost)), arm("c", n_c, x_c)
    incremental = (x_t / n_t - x_c / n_c) * n_t
    assert incremental_conversions(variant, control) == pytest.approx(incremental, abs=1e-6)
    per = cost_per_incremental(variant, control)
    if x_t * n_c - x_c * n_t <= 0:
        assert per is None
        return
    assert per is not None
    assert per == per.quantize(MONEY_PLACES)
    exact = cost * n_c / (x_t * n_c - x_c * n_t)
    assert abs(per - exact) <= MONEY_PLACES / 2
