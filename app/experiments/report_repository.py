"""The SQL aggregation behind an experiment's report: per-variant funnel counts and the daily
series, computed by GROUP BY in the database (never rows loaded into Python), identically on
SQLite and PostgreSQL.

The unit is the customer (abtest/counts.py): a patch experiment sends a customer many
messages, so every funnel stage counts distinct customers. Messages are first reduced to one
row per (variant, customer) and then counted per variant: one hash or sort pass over the
experiment's messages instead of one per ``count(DISTINCT ...)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from abtest.counts import ArmCounts, DailyCounts
from app.db import dialect_name
from app.experiments.models import Assignment, Experiment
from app.messages.models import Message
from app.tracking.models import Conversion

# Money columns hold 6 decimals; SQLite sums their text as floats, so both databases' sums
# are brought to this exact scale (a float sum of such amounts is exact to far more digits).
MONEY_SCALE = Decimal("0.000001")
AnySelect = Select[*tuple[Any, ...]]


def variant_keys(experiment: Experiment) -> list[str]:
    """The configured variants' keys, in their configured order."""
    return [str(v["key"]) for v in experiment.variants]


def money(value: Any) -> Decimal:
    """A SUM of a money column as an exact Decimal at the column's scale (None: 0)."""
    if value is None:
        return Decimal(0).quantize(MONEY_SCALE)
    return Decimal(str(value)).quantize(MONEY_SCALE)


def _reached(column: Any) -> ColumnElement[int]:
    """1 when any of the customer's messages reached the stage (its time is set), else 0."""
    return func.max(case((column.is_not(None), 1), else_=0))


def _per_customer_messages(experiment_id: str) -> AnySelect:
    return (
        select(
            Message.variant.label("variant"),
            func.count().label("messages"),
            _reached(Message.sent_at).label("sent"),
            _reached(Message.delivered_at).label("delivered"),
            _reached(Message.clicked_at).label("clicked"),
            func.sum(Message.cost).label("cost"),
        )
        .where(Message.experiment_id == experiment_id)
        .group_by(Message.variant, Message.customer_id)
    )


def _message_counts(experiment_id: str) -> AnySelect:
    per_customer = _per_customer_messages(experiment_id).subquery("per_customer")
    return select(
        per_customer.c.variant,
        func.sum(per_customer.c.sent),
        func.sum(per_customer.c.delivered),
        func.sum(per_customer.c.clicked),
        func.sum(per_customer.c.messages),
        func.sum(per_customer.c.cost),
    ).group_by(per_customer.c.variant)


def _conversion_filter(experiment: Experiment) -> ColumnElement[bool]:
    condition = Conversion.experiment_id == experiment.id
    if experiment.conversion_event is not None:
        condition = and_(condition, Conversion.event == experiment.conversion_event)
    return condition


def _conversion_counts(experiment: Experiment) -> AnySelect:
    return (
        select(
            Conversion.variant,
            func.count(Conversion.customer_id.distinct()),
            func.sum(Conversion.value),
        )
        .where(_conversion_filter(experiment))
        .group_by(Conversion.variant)
    )


def _assignment_counts(experiment_id: str) -> AnySelect:
    return (
        select(Assignment.variant, func.count())
        .where(Assignment.experiment_id == experiment_id)
        .group_by(Assignment.variant)
    )


async def arm_counts(session: AsyncSession, experiment: Experiment) -> list[ArmCounts]:
    """Each configured variant's funnel, in the configured order; a variant without any
    assignment, message or conversion is there with zeros. Rows naming a variant that is not
    configured are left out."""
    rows = await session.execute(_assignment_counts(experiment.id))
    assigned: dict[str, int] = dict(rows.all())
    sent = {r[0]: r[1:] for r in await session.execute(_message_counts(experiment.id))}
    converted = {r[0]: r[1:] for r in await session.execute(_conversion_counts(experiment))}
    arms = []
    for key in variant_keys(experiment):
        s, d, c, n, cost = sent.get(key, (0, 0, 0, 0, None))
        conversions, value = converted.get(key, (0, None))
        arms.append(
            ArmCounts(
                variant=key,
                assigned=int(assigned.get(key, 0)),
                sent=int(s or 0),
                delivered=int(d or 0),
                clicked=int(c or 0),
                converted=int(conversions or 0),
                messages=int(n or 0),
                cost=money(cost),
                value=money(value),
            )
        )
    return arms


def _utc_day(session: AsyncSession, column: Any) -> Any:
    """The UTC calendar day of a timestamp column. PostgreSQL would take the session's time
    zone for a plain date cast; SQLite stores UTC text, whose first 10 characters are it."""
    if dialect_name(session) == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value)


def _daily_assignments(session: AsyncSession, experiment_id: str) -> AnySelect:
    day = _utc_day(session, Assignment.assigned_at)
    return (
        select(Assignment.variant, day, func.count())
        .where(Assignment.experiment_id == experiment_id)
        .group_by(Assignment.variant, day)
    )


def _daily_conversions(session: AsyncSession, experiment: Experiment) -> AnySelect:
    # a customer counts on the day of their first attributed conversion only
    first = (
        select(
            Conversion.variant.label("variant"),
            func.min(Conversion.occurred_at).label("first_at"),
        )
        .where(_conversion_filter(experiment))
        .group_by(Conversion.variant, Conversion.customer_id)
        .subquery("first_conversions")
    )
    day = _utc_day(session, first.c.first_at)
    return select(first.c.variant, day, func.count()).group_by(first.c.variant, day)


def _merge_daily(
    keys: Sequence[str],
    assigned: Iterable[tuple[str, Any, int]],
    converted: Iterable[tuple[str, Any, int]],
) -> list[DailyCounts]:
    cells: dict[tuple[date, str], list[int]] = {}
    for index, rows in enumerate((assigned, converted)):
        for variant, day, count in rows:
            if variant in keys:
                cells.setdefault((_as_date(day), variant), [0, 0])[index] += int(count)
    days = sorted({day for day, _ in cells})
    # every configured variant on every day with data: the cumulative series stay aligned
    return [
        DailyCounts(variant=key, day=day, assigned=cell[0], converted=cell[1])
        for day in days
        for key in keys
        for cell in [cells.get((day, key), [0, 0])]
    ]


async def daily_counts(session: AsyncSession, experiment: Experiment) -> list[DailyCounts]:
    """Per UTC day and configured variant: customers newly assigned, and customers whose
    first attributed conversion fell on that day. Ordered by day, then the configured
    variant order; every variant appears on every day that has any data."""
    assigned = await session.execute(_daily_assignments(session, experiment.id))
    converted = await session.execute(_daily_conversions(session, experiment))
    return _merge_daily(variant_keys(experiment), assigned.all(), converted.all())


def report_statements(session: AsyncSession, experiment: Experiment) -> list[AnySelect]:
    """Every statement a report runs (for EXPLAIN in bench/experiment_report.py)."""
    return [
        _assignment_counts(experiment.id),
        _message_counts(experiment.id),
        _conversion_counts(experiment),
        _daily_assignments(session, experiment.id),
        _daily_conversions(session, experiment),
    ]
