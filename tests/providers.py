"""Providers that fail on purpose, to drive retries and fallback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.base import ProviderContext, SendResult
from channels.errors import ChannelError
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
