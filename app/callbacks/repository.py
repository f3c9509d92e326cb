from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_name
from app.messages.models import InboundMessage, Message


async def messages_for_receipts(
    session: AsyncSession, *, provider: str, message_ids: Sequence[str], provider_ids: Sequence[str]
) -> list[Message]:
    """Messages last sent by ``provider`` that the receipts name (by our id or theirs)."""
    if not message_ids and not provider_ids:
        return []
    stmt = select(Message).where(
        Message.provider == provider,
        or_(Message.id.in_(list(message_ids)), Message.provider_message_id.in_(list(provider_ids))),
    )
    if dialect_name(session) == "postgresql":
        # a provider resending a report concurrently must wait and then see it applied
        stmt = stmt.with_for_update()
    return list((await session.scalars(stmt)).all())


async def add_inbound(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(InboundMessage), list(rows))


async def erase_inbound(session: AsyncSession, senders: Sequence[str]) -> int:
    """Delete the replies sent from these addresses (erasure of a customer); how many."""
    result = await session.execute(
        delete(InboundMessage).where(InboundMessage.sender.in_(list(senders)))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
