"""Known experiments, assignments, messages and conversions written straight to a database,
for the report and auto-winner tests (both databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import create_engine, create_sessionmaker
from app.experiments.models import Assignment, Experiment
from app.messages.models import Message
from app.tracking.models import Conversion

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
_ids = count()
VARIANTS = [
    {
        "key": "holdout",
        "weight": 20,
        "channel": None,
        "template": None,
        "format": None,
        "holdout": True,
    },
    {
        "key": "sms",
        "weight": 40,
        "channel": "sms",
        "template": "t1",
        "format": "short",
        "holdout": False,
    },
    {
        "key": "wechat",
        "weight": 40,
        "channel": "wechat",
        "template": "t2",
        "format": "card",
        "holdout": False,
    },
]


@pytest.fixture
async def sessions(
    backend: tuple[str, str, str | None],
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A sessionmaker on a fresh SQLite copy or the session's (emptied) PostgreSQL."""
    name, url, _ = backend
    engine = create_engine(url)
    if name == "postgres":
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE experiments, experiment_assignments, messages, message_events, "
                    "outbox, conversions CASCADE"
                )
            )
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def experiment(key: str = "exp1", **changes: Any) -> Experiment:
    values: dict[str, Any] = {
        "id": f"exp_{key}",
        "key": key,
        "kind": "campaign",
        "segment": "everyone",
        "variants": VARIANTS,
        "control": "holdout",
        "salt": key,
        "metric": "converted",
        "status": "running",
        "coverage": 1.0,
        "confidence": 0.95,
        "min_sample": 10,
        "target_lift": 0.1,
        "attribution_hours": 72,
        "auto_winner": False,
        "started_at": T0,
        "created_at": T0,
        "updated_at": T0,
    }
    return Experiment(**{**values, **changes})


def assignment(exp: Experiment, customer: str, variant: str, at: datetime = T0) -> Assignment:
    return Assignment(experiment_id=exp.id, customer_id=customer, variant=variant, assigned_at=at)


def message(
    exp: Experiment,
    customer: str,
    variant: str,
    *,
    sent: bool = True,
    delivered: bool = False,
    clicked: bool = False,
    cost: str | None = "0.045",
) -> Message:
    n = next(_ids)
    return Message(
        id=f"msg_{n:08d}",
        owner="core-banking",
        scenario="account_movement",
        customer_id=customer,
        recipient={},
        variables={},
        channels=["sms"],
        content={},
        decision={},
        status="delivered" if delivered else "sent" if sent else "failed",
        experiment_id=exp.id,
        variant=variant,
        cost=None if cost is None else Decimal(cost),
        created_at=T0,
        updated_at=T0,
        sent_at=T0 if sent else None,
        delivered_at=T0 if delivered else None,
        clicked_at=T0 if clicked else None,
    )


def conversion(
    exp: Experiment | None,
    customer: str,
    variant: str | None,
    *,
    event: str = "purchase",
    value: str | None = "100.00",
    at: datetime = T0,
) -> Conversion:
    n = next(_ids)
    return Conversion(
        id=f"cnv_{n:08d}",
        owner="core-banking",
        customer_id=customer,
        event=event,
        value=None if value is None else Decimal(value),
        occurred_at=at,
        experiment_id=None if exp is None else exp.id,
        variant=variant,
        created_at=at,
    )


async def store(sessions: async_sessionmaker[AsyncSession], rows: Sequence[Any]) -> None:
    async with sessions() as session:
        # no ORM relationships order the inserts: experiments go first for the foreign keys
        session.add_all([r for r in rows if isinstance(r, Experiment)])
        await session.flush()
        session.add_all([r for r in rows if not isinstance(r, Experiment)])
        await session.commit()


def arm_rows(
    exp: Experiment, variant: str, assigned: int, converted: int, start: datetime = T0
) -> list[Any]:
    """``assigned`` customers of ``variant``, the first ``converted`` of them converting."""
    rows: list[Any] = []
    for i in range(assigned):
        customer = f"{variant}-{i:06d}"
        rows.append(assignment(exp, customer, variant, start + timedelta(minutes=i % 600)))
        if i < converted:
            rows.append(conversion(exp, customer, variant, at=start + timedelta(hours=1)))
    return rows
