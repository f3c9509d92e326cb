"""The report's SQL aggregation: exact distinct-customer counts, sums and the daily series,
the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from abtest.counts import ArmCounts, DailyCounts
from app.experiments.report_repository import arm_counts, daily_counts
from tests.experiments.report_data import (
    T0,
    assignment,
    conversion,
    experiment,
    message,
    sessions,
    store,
)

__all__ = ["sessions"]  # the fixture

DAY = timedelta(days=1)
LATE = datetime(2026, 11, 3, 23, 45, tzinfo=T0.tzinfo)  # 07:45 next day in Shanghai


def funnel(exp: Any) -> list[Any]:
    """holdout: 4 customers, no messages; sms: 4 customers, 6 messages to 3 of them;
    wechat: nothing at all. Conversions of several events, some repeated."""
    rows: list[Any] = [assignment(exp, f"c{i}", "holdout") for i in (1, 2, 3)]
    rows.append(assignment(exp, "c4", "holdout", LATE))
    rows += [assignment(exp, f"s{i}", "sms") for i in (1, 2, 3, 4)]
    rows += [
        message(exp, "s1", "sms", delivered=True, clicked=True),
        message(exp, "s1", "sms"),
        message(exp, "s1", "sms", sent=False, cost=None),
        message(exp, "s2", "sms", delivered=True),
        message(exp, "s2", "sms", delivered=True),
        message(exp, "s3", "sms", sent=False, cost="0.05"),
    ]
    rows += [
        conversion(exp, "c1", "holdout", value="50.00"),
        conversion(exp, "c1", "holdout", value="25.00"),
        conversion(exp, "c2", "holdout", event="signup", value=None),
        conversion(exp, "s1", "sms", at=T0 + DAY),
        conversion(exp, "s2", "sms", value="10.50", at=T0 + 2 * DAY),
        conversion(exp, "s2", "sms", value="1.25"),
        conversion(exp, "s9", "ghost"),  # a variant that is not configured
    ]
    return rows


def other_experiment_noise() -> list[Any]:
    other = experiment("other")
    return [
        other,
        assignment(other, "s1", "sms"),
        message(other, "s4", "sms", delivered=True, clicked=True),
        conversion(other, "s4", "sms"),
        conversion(None, "s3", None),  # unattributed
    ]


async def load(sessions: async_sessionmaker[AsyncSession], **changes: Any) -> Any:
    exp = experiment(**changes)
    await store(sessions, [exp, *funnel(exp), *other_experiment_noise()])
    return exp


async def test_arm_counts_count_distinct_customers_and_sum_money(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    exp = await load(sessions)
    async with sessions() as session:
        arms = await arm_counts(session, exp)
    assert arms == [
        ArmCounts("holdout", 4, 0, 0, 0, 2, 0, Decimal("0.000000"), Decimal("75.000000")),
        ArmCounts("sms", 4, 2, 2, 1, 2, 6, Decimal("0.230000"), Decimal("111.750000")),
        ArmCounts("wechat", 0, 0, 0, 0, 0, 0, Decimal("0.000000"), Decimal("0.000000")),
    ]
    assert [str(a.cost) for a in arms] == ["0.000000", "0.230000", "0.000000"]


async def test_conversion_event_filters_conversions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    exp = await load(sessions, conversion_event="purchase")
    async with sessions() as session:
        arms = {a.variant: a for a in await arm_counts(session, exp)}
        daily = await daily_counts(session, exp)
    assert (arms["holdout"].converted, arms["holdout"].value) == (1, Decimal("75"))
    assert (arms["sms"].converted, arms["sms"].value) == (2, Decimal("111.75"))
    assert sum(d.converted for d in daily if d.variant == "holdout") == 1


async def test_daily_series_by_utc_day_with_every_variant(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    exp = await load(sessions)
    async with sessions() as session:
        if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            # the UTC day, whatever the connection's time zone
            await session.execute(text("SET TIME ZONE 'Asia/Shanghai'"))
        daily = await daily_counts(session, exp)
    first, second = date(2026, 11, 2), date(2026, 11, 3)
    assert daily == [
        DailyCounts("holdout", first, 3, 2),
        DailyCounts("sms", first, 4, 1),
        DailyCounts("wechat", first, 0, 0),
        DailyCounts("holdout", second, 1, 0),
        DailyCounts("sms", second, 0, 1),
        DailyCounts("wechat", second, 0, 0),
    ]


async def test_an_experiment_without_rows_has_every_variant_at_zero(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    exp = experiment("empty")
    await store(sessions, [exp, *other_experiment_noise()])
    async with sessions() as session:
        arms = await arm_counts(session, exp)
        daily = await daily_counts(session, exp)
    assert [(a.variant, a.assigned, a.messages, a.cost) for a in arms] == [
        ("holdout", 0, 0, Decimal(0)),
        ("sms", 0, 0, Decimal(0)),
        ("wechat", 0, 0, Decimal(0)),
    ]
    assert daily == []
