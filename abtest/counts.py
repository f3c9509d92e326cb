"""What a report is computed from: per-variant funnel counts and a daily series, as the SQL
aggregation returns them (app/experiments/report_repository.py) and the pure report reads them
(abtest/report.py).

The unit is the customer (the unit of randomisation): each stage counts distinct customers of
the variant, so a customer who got three messages and clicked twice counts once as clicked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

STAGES = ("assigned", "sent", "delivered", "clicked", "converted")


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """One variant's funnel. ``cost``: what its messages cost (providers' price per message);
    ``value``: the total value of its attributed conversions."""

    variant: str
    assigned: int
    sent: int
    delivered: int
    clicked: int
    converted: int
    messages: int = 0
    cost: Decimal = Decimal(0)
    value: Decimal = Decimal(0)

    def stage(self, name: str) -> int:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        count: int = getattr(self, name)
        return count


@dataclass(frozen=True, slots=True)
class DailyCounts:
    """Customers newly assigned to ``variant`` on ``day`` (UTC) and customers whose first
    attributed conversion was that day; cumulative sums give the conversion rate over time."""

    variant: str
    day: date
    assigned: int
    converted: int
