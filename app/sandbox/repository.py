from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflicts
from app.ids import new_id
from app.sandbox.models import SandboxDelivery
from app.timeutil import utcnow


async def record_many(session: AsyncSession, deliveries: Sequence[dict[str, Any]]) -> list[str]:
    """Record deliveries once per idempotency key; return each one's id (the first one's on
    a replay), in order."""
    rows = [{"id": new_id("sbx"), "created_at": utcnow(), **d} for d in deliveries]
    stmt = insert_ignoring_conflicts(session, SandboxDelivery, "idempotency_key")
    await session.execute(stmt.values(rows))
    keys = [d["idempotency_key"] for d in deliveries]
    found = await session.execute(
        select(SandboxDelivery.idempotency_key, SandboxDelivery.id).where(
            SandboxDelivery.idempotency_key.in_(keys)
        )
    )
    ids: dict[str, str] = dict(found.all())
    return [ids[k] for k in keys]


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
