"""Run the worker's provider loop (``delivery._attempt``) against a registry of providers,
without a database or a queue."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from app.messages import delivery
from app.messages.outcomes import Attempt, Claimed
from channels.accounts import ProviderAccount
from channels.base import ChannelProvider, ProviderContext, SendResult
from channels.circuit import CircuitBreaker
from channels.ratelimit import LocalRateLimiter
from channels.registry import ProviderRegistry, ProviderSlot


class Recording(ChannelProvider):
    """A backup account that accepts everything and remembers it."""

    type_name = "recording"
    channels = ("sms", "email", "wechat")

    def __init__(self, account: str = "backup", channel: str = "sms") -> None:
        super().__init__(account=account, channel=channel, context=ProviderContext())
        self.sent: list[str] = []

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        self.sent.append(message_id)
        return SendResult(provider_message_id=f"rec-{message_id}")


def registry(*providers: tuple[ChannelProvider, dict[str, Any]]) -> ProviderRegistry:
    """Slots in the order given (priority 1, 2, ...); per-account options as the TOML has."""
    slots = []
    for index, (provider, options) in enumerate(providers):
        account = ProviderAccount(
            name=provider.account,
            type=type(provider).type_name,
            channel=provider.channel,
            priority=index + 1,
            **options,
        )
        slots.append(ProviderSlot(account, provider))
    return ProviderRegistry(slots, limiter=LocalRateLimiter())


def claimed(
    message_id: str, channel: str, contact: dict[str, str], content: dict[str, Any]
) -> Claimed:
    return Claimed(
        id=message_id,
        channels=[channel],
        channel_index=0,
        recipient=contact,
        content={channel: content},
        attempts=1,
        channel_attempts=1,
    )


async def attempt(providers: ProviderRegistry, message: Claimed) -> list[Attempt]:
    runtime: Any = SimpleNamespace(providers=providers)
    return await delivery._attempt(runtime, message)


def open_circuit(breaker: CircuitBreaker, sends: int = 20) -> None:
    """Fail ``sends`` sends let through at once (20: the default min_requests)."""
    tickets = [breaker.allow() for _ in range(sends)]
    for ticket in tickets:
        assert ticket is not None
        breaker.record(ticket, failed=True)
    assert breaker.refuses()
