"""Providers that fail on purpose, to drive retries and fallback."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from channels.base import (
    CallbackRequest,
    CallbackResult,
    DeliveryReceipt,
    InboundReply,
    ProviderContext,
    SendResult,
)
from channels.errors import CallbackAuthError, CallbackRejected, ChannelError
from channels.sandbox import SandboxProvider


class ScriptedProvider(SandboxProvider):
    """Raises the scripted errors one per call, then records like the sandbox."""

    def __init__(self, channel: str, context: ProviderContext, errors: list[ChannelError]) -> None:
        super().__init__(account=f"scripted-{channel}", channel=channel, context=context)
        self.errors = list(errors)
        self.calls = 0

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )


class AlwaysFailing(SandboxProvider):
    def __init__(self, channel: str, context: ProviderContext, error: ChannelError) -> None:
        super().__init__(account=f"failing-{channel}", channel=channel, context=context)
        self.error = error
        self.calls = 0

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        self.calls += 1
        raise self.error


class ReportingProvider(SandboxProvider):
    """Sends like the sandbox but learns delivery later, from callbacks in a small JSON
    format authenticated by a token in the query: {"receipts": [...], "replies": [...]}."""

    TOKEN = "cb-token"

    def __init__(self, channel: str, context: ProviderContext) -> None:
        super().__init__(account=f"reporting-{channel}", channel=channel, context=context)

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        sent = await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )
        return SendResult(provider_message_id=sent.provider_message_id, delivered=False)

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        if request.query.get("token") != self.TOKEN:
            raise CallbackAuthError("bad token")
        try:
            body = json.loads(request.body)
            receipts = [_receipt(r) for r in body.get("receipts", [])]
            replies = [InboundReply(**r) for r in body.get("replies", [])]
        except (ValueError, TypeError) as exc:
            raise CallbackRejected(str(exc)) from None
        return CallbackResult(receipts=receipts, replies=replies, response_body=b'{"ok":true}')


def _receipt(fields: dict[str, Any]) -> DeliveryReceipt:
    at = fields.get("occurred_at")
    if at is not None:
        fields = {**fields, "occurred_at": datetime.fromisoformat(at)}
    return DeliveryReceipt(**fields)
