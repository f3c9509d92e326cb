"""Early receipts of two providers applied by the sweeper lock their messages in id order,
as a provider's callback does: the two cannot deadlock (PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import insert, select

from app.callbacks import service
from app.callbacks.models import EarlyReceipt
from app.messages.models import Message
from app.timeutil import utcnow
from tests.test_pipeline_pg import NOW, Sessions, _message, _prefixes, sessions

__all__ = ["sessions"]  # the fixture


async def test_early_receipts_of_two_providers_lock_in_id_order(sessions: Sessions) -> None:
    """``first`` was sent by provider B, ``second`` by provider A; their early receipts are
    applied A's first. A callback holds ``first`` and then wants ``second``: the sweep must
    not hold ``second`` meanwhile (it waits for ``first`` holding nothing)."""
    _, prefix = _prefixes()
    first, second = prefix + "m1", prefix + "m2"
    sent = {"status": "sent", "sent_at": NOW, "channel": "sms"}
    rows = [
        _message(first, **sent, provider="b-sms", provider_message_id="b-1"),
        _message(second, **sent, provider="a-sms", provider_message_id="a-2"),
    ]
    early = [
        {"provider": "a-sms", "message_id": second, "provider_message_id": "a-2"},
        {"provider": "b-sms", "message_id": first, "provider_message_id": "b-1"},
    ]
    async with sessions() as session:
        keys = {k for r in rows for k in r}
        await session.execute(insert(Message), [{**dict.fromkeys(keys), **r} for r in rows])
        now = utcnow()
        await session.execute(
            insert(EarlyReceipt),
            [{**e, "delivered": True, "code": "DELIVRD", "received_at": now} for e in early],
        )
        await session.commit()

    async def sweep() -> None:
        async with sessions() as session:
            now = utcnow()
            await service.apply_early(
                session, now=now, expire_before=now - timedelta(hours=24), limit=100
            )
            await session.commit()

    locking = select(Message.id).with_for_update()
    async with sessions() as callback:
        await callback.execute(locking.where(Message.id == first))
        sweeping = asyncio.create_task(sweep())
        await asyncio.sleep(0.5)
        assert not sweeping.done(), "the sweep waits for the message the callback holds"
        await callback.execute(locking.where(Message.id == second))  # no deadlock
        await callback.commit()
    await asyncio.wait_for(sweeping, 10)
    async with sessions() as session:
        statuses = dict(
            (
                await session.execute(
                    select(Message.id, Message.status).where(Message.id.in_([first, second]))
                )
            ).all()
        )
    assert statuses == {first: "delivered", second: "delivered"}
