"""The plugin contract. A provider is a class registered in the ``icc.channels`` entry-point
group; one instance is made per configured account."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

CHANNELS = ("sms", "email", "wechat")
CONTACT_FIELD = {"sms": "phone", "email": "email", "wechat": "wechat_openid"}


@dataclass(frozen=True)
class ProviderContext:
    """What the platform lends a provider: its database (for the sandbox) and shared services."""

    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    redis_url: str | None = None


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    # Some providers (the sandbox) know delivery at once; others report it by callback.
    delivered: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


class ChannelProvider(ABC):
    """Base class of every provider plugin. Metadata lives on the class."""

    type_name: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    max_length: ClassVar[int | None] = None
    default_rate: ClassVar[float | None] = None

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        self.account = account
        self.channel = channel
        self.settings = dict(settings or {})
        self.context = context

    @abstractmethod
    async def send(
        self,
        *,
        to: str,
        content: Mapping[str, Any],
        idempotency_key: str,
        message_id: str,
    ) -> SendResult:
        """Send one message. ``idempotency_key`` is stable across retries of the same message
        on the same channel, so a provider that dedups on it never sends twice.

        Raises TransientChannelError (retry) or PermanentChannelError (give up on this channel).
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
