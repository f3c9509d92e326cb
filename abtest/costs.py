"""What a variant's results cost: per message, per customer reached, per conversion, and per
conversion it added over the control (the holdout, in a patch experiment).

Money is ``Decimal`` in and out, never float: the totals come from the providers' decimal prices.
Results are quantized to 4 decimal places (``MONEY_PLACES``) with ROUND_HALF_UP: an SMS costs
a few hundredths of a yuan, so a cost per message rounded to cents would hide the differences
between providers that an analyst compares. Undefined costs (nothing to divide by, no control,
no incremental conversion) are ``None``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import NamedTuple

from abtest.counts import ArmCounts

MONEY_PLACES = Decimal("0.0001")


class ArmCosts(NamedTuple):
    """One variant's unit costs. ``incremental_conversions`` is a float (an expectation, not a
    count); the costs are Decimals quantized to ``MONEY_PLACES`` or None."""

    total: Decimal
    per_message: Decimal | None
    per_sent: Decimal | None
    per_delivered: Decimal | None
    per_conversion: Decimal | None
    incremental_conversions: float | None
    per_incremental_conversion: Decimal | None


def quantize_money(amount: Decimal) -> Decimal:
    """``amount`` to ``MONEY_PLACES``, half up (the rounding a finance team expects)."""
    return amount.quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)


def cost_per(cost: Decimal, count: int) -> Decimal | None:
    """cost / count, quantized; None when count is 0 (nothing was bought for the money)."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count!r}")
    if count == 0:
        return None
    return quantize_money(cost / count)


def _incremental(arm: ArmCounts, control: ArmCounts) -> Fraction | None:
    """(rate_variant - rate_control) * assigned_variant, exactly: the conversions the variant
    produced beyond what its customers would have done anyway, estimated by the control."""
    if arm.assigned == 0 or control.assigned == 0:
        return None
    lift = Fraction(arm.converted, arm.assigned) - Fraction(control.converted, control.assigned)
    return lift * arm.assigned


def incremental_conversions(arm: ArmCounts, control: ArmCounts | None) -> float | None:
    """Conversions the variant added over the control: (rate_variant - rate_control) times the
    variant's assigned customers. None without a control or with an empty arm."""
    if control is None:
        return None
    incremental = _incremental(arm, control)
    return None if incremental is None else float(incremental)


def cost_per_incremental(arm: ArmCounts, control: ArmCounts | None) -> Decimal | None:
    """The variant's cost divided by its incremental conversions; None when there is no
    control, an arm is empty, or the variant added nothing (incremental <= 0: no price buys a
    conversion that did not happen)."""
    if control is None:
        return None
    incremental = _incremental(arm, control)
    if incremental is None or incremental <= 0:
        return None
    # Divide with the fraction's integers so no float ever touches the money.
    return quantize_money(arm.cost * incremental.denominator / incremental.numerator)


def arm_costs(arm: ArmCounts, control: ArmCounts | None) -> ArmCosts:
    """Every unit cost of one variant; ``control`` is the arm its conversions are compared with
    (None for the control itself, or when the experiment has none)."""
    return ArmCosts(
        total=quantize_money(arm.cost),
        per_message=cost_per(arm.cost, arm.messages),
        per_sent=cost_per(arm.cost, arm.sent),
        per_delivered=cost_per(arm.cost, arm.delivered),
        per_conversion=cost_per(arm.cost, arm.converted),
        incremental_conversions=incremental_conversions(arm, control),
        per_incremental_conversion=cost_per_incremental(arm, control),
    )
