"""SQL of the idempotency records."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflicts
from app.idempotency.models import IdempotentRequest
from app.ids import new_id
from app.timeutil import utcnow

TABLE = IdempotentRequest.__table__


async def claim(
    session: AsyncSession,
    *,
    owner: str,
    route: str,
    key: str,
    request_hash: str,
    status_code: int,
) -> str | None:
    """Insert the record (response still NULL); its id, or None if the key is taken.

    The unique constraint decides: on PostgreSQL the insert waits for a concurrent
    transaction holding the same key and then either inserts (it rolled back) or does
    nothing (it committed); SQLite writers are serialized anyway."""
    stmt = (
        insert_ignoring_conflicts(session, TABLE, "owner", "route", "key")
        .values(
            id=new_id("idem"),
            owner=owner,
            route=route,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=None,
            created_at=utcnow(),
        )
        .returning(TABLE.c.id)
    )
    row_id: str | None = (await session.execute(stmt)).scalar_one_or_none()
    return row_id


async def find(
    session: AsyncSession, *, owner: str, route: str, key: str
) -> IdempotentRequest | None:
    stmt = select(IdempotentRequest).where(
        IdempotentRequest.owner == owner,
        IdempotentRequest.route == route,
        IdempotentRequest.key == key,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def complete(session: AsyncSession, row_id: str, response: dict[str, Any]) -> None:
    await session.execute(
        update(IdempotentRequest)
        .where(IdempotentRequest.id == row_id)
        .values(response=response)
        .execution_options(synchronize_session=False)
    )


async def forget_before(session: AsyncSession, *, bound_id: str, limit: int) -> int:
    """Delete up to ``limit`` records older than ``bound_id`` (ids sort by creation time, so
    the primary key serves the range); how many went."""
    row = IdempotentRequest
    oldest = select(row.id).where(row.id < bound_id).order_by(row.id).limit(limit)
    result = await session.execute(
        delete(row)
        .where(row.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
