from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflicts
from app.ids import new_id
from app.sandbox.models import SandboxDelivery
from app.timeutil import utcnow


async def record(
    session: AsyncSession,
    *,
    provider: str,
    channel: str,
    idempotency_key: str,
    message_id: str,
    to: str,
    content: dict[str, Any],
) -> str:
    """Record one delivery once per idempotency key; return its id (the existing one on replay)."""
    stmt = insert_ignoring_conflicts(session, SandboxDelivery, "idempotency_key").values(
        id=new_id("sbx"),
        provider=provider,
        channel=channel,
        idempotency_key=idempotency_key,
        message_id=message_id,
        to=to,
        content=content,
        created_at=utcnow(),
    )
    await session.execute(stmt)
    found = await session.scalar(
        select(SandboxDelivery.id).where(SandboxDelivery.idempotency_key == idempotency_key)
    )
    assert found is not None
    return found


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
