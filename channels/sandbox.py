"""The sandbox provider: records what would be sent instead of sending it (embedded default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.sandbox import repository
from channels.base import CHANNELS, ChannelProvider, SendResult


class SandboxProvider(ChannelProvider):
    type_name = "sandbox"
    channels = CHANNELS

    async def send(
        self,
        *,
        to: str,
        content: Mapping[str, Any],
        idempotency_key: str,
        message_id: str,
    ) -> SendResult:
        if self.context.sessionmaker is None:
            raise RuntimeError("the sandbox provider needs the platform database")
        async with self.context.sessionmaker() as session:
            delivery_id = await repository.record(
                session,
                provider=self.account,
                channel=self.channel,
                idempotency_key=idempotency_key,
                message_id=message_id,
                to=to,
                content=dict(content),
            )
            await session.commit()
        return SendResult(provider_message_id=delivery_id, delivered=True)
