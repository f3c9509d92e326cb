"""The sandbox provider: records what would be sent instead of sending it (embedded default).
Concurrent sends are recorded together, one transaction per group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.batching import Coalescer
from app.sandbox import repository
from channels.base import CHANNELS, ChannelProvider, ProviderContext, SendResult


class SandboxProvider(ChannelProvider):
    type_name = "sandbox"
    channels = CHANNELS
    local = True
    send_timeout = 1.0  # a row written, with others

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        self._recorder: Coalescer[dict[str, Any], str] = Coalescer(self._record, max_batch=500)

    async def send(
        self,
        *,
        to: str,
        content: Mapping[str, Any],
        idempotency_key: str,
        message_id: str,
    ) -> SendResult:
        delivery = {
            "provider": self.account,
            "channel": self.channel,
            "idempotency_key": idempotency_key,
            "message_id": message_id,
            "to": to,
            "content": dict(content),
        }
        delivery_id = await self._recorder.submit(delivery)
        return SendResult(provider_message_id=delivery_id, delivered=True)

    async def _record(self, deliveries: list[dict[str, Any]]) -> Sequence[str]:
        if self.context.sessionmaker is None:
            raise RuntimeError("the sandbox provider needs the platform database")
        async with self.context.sessionmaker() as session:
            ids = await repository.record_many(session, deliveries)
            await session.commit()
        return ids

    async def close(self) -> None:
        await self._recorder.close()
