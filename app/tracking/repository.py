"""All SQL of tracking: links, first opens and clicks, conversions and exposures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, literal, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflicts
from app.experiments.models import Assignment, Experiment
from app.messages import bulk_pg
from app.messages.models import Message
from app.tracking.models import Conversion, TrackedLink

LINKS: Table = TrackedLink.__table__  # type: ignore[assignment]
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
CONVERSIONS: Table = Conversion.__table__  # type: ignore[assignment]


async def insert_links(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert link rows, skipping tokens already taken; return the tokens inserted. COPY for
    big groups on PostgreSQL (as the messages of a batch), executemany otherwise."""
    if not rows:
        return set()
    if bulk_pg.applies(session, len(rows)):
        inserted: set[str] = await bulk_pg.insert_ignoring_conflicts(
            session, LINKS, rows, conflict=("token",), returning="token"
        )
        return inserted
    stmt = insert_ignoring_conflicts(session, LINKS, "token").returning(LINKS.c.token)
    result = await session.execute(stmt, list(rows))
    return set(result.scalars())


async def set_contents(session: AsyncSession, contents: dict[str, Any]) -> None:
    """Store new content (message id -> content) for messages whose tokens were retaken."""
    if contents:
        await session.execute(
            update(MESSAGES).where(MESSAGES.c.id == bindparam("b_id")),
            [{"b_id": mid, "content": content} for mid, content in contents.items()],
        )


async def link(session: AsyncSession, token: str) -> TrackedLink | None:
    return await session.get(TrackedLink, token)


async def first_touch(session: AsyncSession, message_id: str, column: str, at: datetime) -> bool:
    """Set ``column`` (opened_at or clicked_at) unless already set; whether this call did.
    The WHERE makes concurrent clicks race on the row: exactly one of them sees a row changed."""
    target = MESSAGES.c[column]
    result = await session.execute(
        update(MESSAGES).where(MESSAGES.c.id == message_id, target.is_(None)).values({column: at})
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_conversions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert conversions, skipping taken (owner, idempotency_key); return inserted ids."""
    if not rows:
        return set()
    stmt = insert_ignoring_conflicts(session, CONVERSIONS, "owner", "idempotency_key")
    result = await session.execute(stmt.returning(CONVERSIONS.c.id), list(rows))
    return set(result.scalars())


async def conversions_by_keys(
    session: AsyncSession, owner: str, keys: Sequence[str]
) -> dict[str, Conversion]:
    found: dict[str, Conversion] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 500):
        rows = await session.scalars(
            select(Conversion).where(
                Conversion.owner == owner,
                Conversion.idempotency_key.in_(unique[start : start + 500]),
            )
        )
        found.update((c.idempotency_key or "", c) for c in rows)
    return found


async def messages_by_ids(session: AsyncSession, ids: Sequence[str]) -> dict[str, Any]:
    """id -> (id, customer_id, experiment_id, variant, created_at) rows."""
    if not ids:
        return {}
    m = MESSAGES.c
    rows = await session.execute(
        select(m.id, m.customer_id, m.experiment_id, m.variant, m.created_at).where(
            m.id.in_(list(set(ids)))
        )
    )
    return {row.id: row for row in rows}


async def experiments_by_ids(session: AsyncSession, ids: Sequence[str]) -> dict[str, Experiment]:
    if not ids:
        return {}
    rows = await session.scalars(select(Experiment).where(Experiment.id.in_(list(set(ids)))))
    return {e.id: e for e in rows}


async def max_attribution_hours(session: AsyncSession) -> int:
    """The longest attribution window of any experiment (0: no experiment)."""
    return int(await session.scalar(select(func.max(Experiment.attribution_hours))) or 0)


async def exposures(
    session: AsyncSession, customer_ids: Sequence[str], since: datetime, until: datetime
) -> list[Any]:
    """The experiment exposures of these customers in [since, until]: messages of an
    experiment, and assignments (a holdout gets no message; its exposure is the assignment).
    Rows: (customer_id, at, experiment_id, variant, message_id or None)."""
    found: list[Any] = []
    unique = list(dict.fromkeys(customer_ids))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        found += await session.execute(_exposures(chunk, since, until))
    return found


def _exposures(customer_ids: list[str], since: datetime, until: datetime) -> Any:
    m = MESSAGES.c
    messages = select(
        m.customer_id,
        m.created_at.label("at"),
        m.experiment_id,
        m.variant,
        m.id.label("message_id"),
    ).where(
        m.customer_id.in_(customer_ids),
        m.experiment_id.is_not(None),
        m.created_at >= since,
        m.created_at <= until,
    )
    assigned = select(
        Assignment.customer_id,
        Assignment.assigned_at.label("at"),
        Assignment.experiment_id,
        Assignment.variant,
        literal(None, type_=Message.id.type).label("message_id"),
    ).where(
        Assignment.customer_id.in_(customer_ids),
        Assignment.assigned_at >= since,
        Assignment.assigned_at <= until,
    )
    return union_all(messages, assigned)


async def list_conversions(
    session: AsyncSession,
    *,
    customer_id: str | None,
    experiment_id: str | None,
    before_id: str | None,
    limit: int,
) -> list[Conversion]:
    stmt = select(Conversion).order_by(Conversion.id.desc()).limit(limit)
    if customer_id is not None:
        stmt = stmt.where(Conversion.customer_id == customer_id)
    if experiment_id is not None:
        stmt = stmt.where(Conversion.experiment_id == experiment_id)
    if before_id is not None:
        stmt = stmt.where(Conversion.id < before_id)
    return list((await session.scalars(stmt)).all())


async def experiment_by_key_or_id(session: AsyncSession, ref: str) -> Experiment | None:
    found: Experiment | None = await session.scalar(
        select(Experiment).where(or_(Experiment.key == ref, Experiment.id == ref))
    )
    return found


async def erase_customer(session: AsyncSession, customer_id: str, *, anonymous_id: str) -> None:
    """Erasure: the tracked links of the customer's messages go (a link may carry personal
    data in its query; the counted click stays on the message), and the customer's
    conversions and experiment assignments move to ``anonymous_id``, so the reports keep
    their counts. Runs before the messages themselves are anonymised."""
    mine = select(Message.id).where(Message.customer_id == customer_id)
    await session.execute(
        delete(TrackedLink)
        .where(TrackedLink.message_id.in_(mine))
        .execution_options(synchronize_session=False)
    )
    for table in (Conversion, Assignment):
        await session.execute(
            update(table)
            .where(table.customer_id == customer_id)
            .values(customer_id=anonymous_id)
            .execution_options(synchronize_session=False)
        )
