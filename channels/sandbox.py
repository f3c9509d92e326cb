"""The sandbox provider: records what would be sent instead of sending it (embedded default).

A send is only kept in memory: its row is written by ``record_sends`` in the transaction
that records the message's outcome (app/messages/recorded_sends.py), so the sandbox holds
a send exactly when the message says it went: one row per message and channel, the send
the message names. A send whose outcome is lost (a crash before it was written) or
overtaken (the lease ran out and a newer claim sent the message) leaves no row, nor does
the send of a message whose customer was erased meanwhile. Before, every group of sends was
written in a transaction of its own: about a tenth of the CPU of draining a backlog."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import monotonic
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.ids import new_id
from app.sandbox import repository
from channels.base import CHANNELS, ChannelProvider, ProviderContext, SendResult

# Sends whose outcome never came (one timed out after the sandbox answered) are let go after
# this long: far beyond any claim's lease, after which their outcome can no longer be written.
UNSETTLED_SECONDS = 3_600.0


class SandboxProvider(ChannelProvider):
    type_name = "sandbox"
    channels = CHANNELS
    local = True
    send_timeout = 1.0  # nothing to wait for

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        # delivery id -> (its row, when it was sent); oldest first
        self._unsettled: dict[str, tuple[dict[str, Any], float]] = {}
        self._next_let_go = 0.0

    async def send(
        self,
        *,
        to: str,
        content: Mapping[str, Any],
        idempotency_key: str,
        message_id: str,
    ) -> SendResult:
        now = monotonic()
        if now >= self._next_let_go:  # once a second: finding the oldest is not free
            self._next_let_go = now + 1.0
            self._let_go(now - UNSETTLED_SECONDS)
        delivery_id = new_id("sbx")
        delivery = {
            "id": delivery_id,
            "provider": self.account,
            "channel": self.channel,
            "idempotency_key": idempotency_key,
            "message_id": message_id,
            "to": to,
            "content": dict(content),
        }
        self._unsettled[delivery_id] = (delivery, now)
        return SendResult(provider_message_id=delivery_id, delivered=True)

    async def record_sends(
        self, session: AsyncSession, provider_message_ids: Sequence[str]
    ) -> None:
        rows = [hit[0] for i in provider_message_ids if (hit := self._unsettled.get(i))]
        if rows:
            await repository.record_sent(session, rows)

    def forget_sends(self, provider_message_ids: Sequence[str]) -> None:
        for delivery_id in provider_message_ids:
            self._unsettled.pop(delivery_id, None)

    @property
    def unsettled(self) -> int:
        """Sends whose outcome is not settled yet."""
        return len(self._unsettled)

    def _let_go(self, before: float) -> None:
        while self._unsettled:
            oldest = next(iter(self._unsettled))
            if self._unsettled[oldest][1] >= before:
                return
            del self._unsettled[oldest]
