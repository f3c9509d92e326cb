from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import sqlite_rows
from app.db import dialect_name, insert_ignoring_conflicts
from app.ids import new_ids
from app.messages.models import Message
from app.sandbox.models import SandboxDelivery
from app.timeutil import utcnow

SANDBOX: Table = SandboxDelivery.__table__  # type: ignore[assignment]


async def record_many(session: AsyncSession, deliveries: Sequence[dict[str, Any]]) -> list[str]:
    """Record deliveries once per idempotency key; return each one's id (the first one's on
    a replay), in order."""
    now = utcnow()
    ids_made = new_ids("sbx", len(deliveries))
    rows = [{"id": i, "created_at": now, **d} for i, d in zip(ids_made, deliveries, strict=True)]
    ids: dict[str, str]
    if sqlite_rows.applies(session, rows):
        count = await sqlite_rows.insert(session, SANDBOX, rows, ignoring=("idempotency_key",))
        # all inserted, or some were replays: then every key is looked up below
        ids = {r["idempotency_key"]: r["id"] for r in rows} if count == len(rows) else {}
    else:
        # executemany: compiled once and cached (a multi-row VALUES is compiled per group size)
        stmt = _recording(dialect_name(session))
        ids = dict((await session.execute(stmt, rows)).all())
    replays = [d["idempotency_key"] for d in deliveries if d["idempotency_key"] not in ids]
    if replays:
        found = await session.execute(
            select(SANDBOX.c.idempotency_key, SANDBOX.c.id).where(
                SANDBOX.c.idempotency_key.in_(replays)
            )
        )
        ids.update(found.all())
    return [ids[d["idempotency_key"]] for d in deliveries]


@functools.cache
def _recording(dialect: str) -> Any:
    """record_many's statement, made once per database kind (not at every group)."""
    return insert_ignoring_conflicts(dialect, SANDBOX, "idempotency_key").returning(
        SANDBOX.c.idempotency_key, SANDBOX.c.id
    )


async def list_deliveries(
    session: AsyncSession,
    *,
    channel: str | None,
    message_id: str | None,
    before_id: str | None,
    since: datetime | None,
    limit: int,
) -> list[SandboxDelivery]:
    stmt = select(SandboxDelivery).order_by(SandboxDelivery.id.desc()).limit(limit)
    if channel:
        stmt = stmt.where(SandboxDelivery.channel == channel)
    if message_id:
        stmt = stmt.where(SandboxDelivery.message_id == message_id)
    if before_id:
        stmt = stmt.where(SandboxDelivery.id < before_id)
    if since:
        stmt = stmt.where(SandboxDelivery.created_at >= since)
    return list((await session.scalars(stmt)).all())


async def erase_for_customer(session: AsyncSession, customer_id: str) -> None:
    """Delete the sandbox's copies of a customer's messages (erasure of the customer)."""
    mine = select(Message.id).where(Message.customer_id == customer_id)
    await session.execute(delete(SANDBOX).where(SANDBOX.c.message_id.in_(mine)))
