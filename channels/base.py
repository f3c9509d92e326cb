"""The plugin contract. A provider is a class registered in the ``icc.channels`` entry-point
group; one instance is made per configured account."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.masking import mask_text
from channels.errors import CallbackNotSupported

CHANNELS = ("sms", "email", "wechat")
CONTACT_FIELD = {"sms": "phone", "email": "email", "wechat": "wechat_openid"}


@dataclass(frozen=True)
class ProviderContext:
    """What the platform lends a provider: its database (for the sandbox) and shared services."""

    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    redis_url: str | None = None


@dataclass(frozen=True)
class DeliveryReceipt:
    """A provider's report on one message: delivered or failed at the handset/mailbox."""

    delivered: bool
    provider_message_id: str | None = None
    message_id: str | None = None  # ours, when the provider echoes it (out_id, client_msg_id)
    code: str | None = None  # the provider's own status or error code, kept on the message
    detail: str | None = None  # the provider's text, masked as logs are (see ChannelError)
    occurred_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("provider_message_id", "message_id", "code", "detail"):
            _drop_nul(self, name)
        if self.detail:
            object.__setattr__(self, "detail", mask_text(self.detail))


@dataclass(frozen=True)
class InboundReply:
    """A customer's reply (e.g. an SMS "TD" / "退订" to opt out)."""

    sender: str  # phone number or openid
    text: str
    received_at: datetime | None = None

    def __post_init__(self) -> None:
        _drop_nul(self, "sender")
        _drop_nul(self, "text")


def _drop_nul(report: object, name: str) -> None:
    """A provider's NUL goes (PostgreSQL stores none): a callback is taken whole or not at
    all, and a provider does not send a refused one again (app.nul_guard leaves callbacks
    to this)."""
    value = getattr(report, name)
    if isinstance(value, str) and "\x00" in value:
        object.__setattr__(report, name, value.replace("\x00", ""))


@dataclass(frozen=True)
class CallbackResult:
    """What a provider's callback carried, and the acknowledgement the provider expects."""

    receipts: list[DeliveryReceipt] = field(default_factory=list)
    replies: list[InboundReply] = field(default_factory=list)
    response_body: bytes = b""
    media_type: str = "application/json"


@dataclass(frozen=True)
class CallbackRequest:
    method: str
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    body: bytes


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
    # Sends that wait on no remote service (the sandbox writes a row): the embedded queue may
    # then claim and send a whole job at once, as no connection pool, rate limit or slow
    # answer can hold the job's last sends past their claim's deadline.
    local: ClassVar[bool] = False
    # The longest one send may take (its transport timeout; plugins with a timeout setting
    # set it): the worker waits for a rate-limit slot only while this much time is left
    # before the send's deadline.
    send_timeout: float = 10.0

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

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        """Parse a callback the provider pushed to ``/v1/callbacks/{account}``, after checking
        it is authentic the way the provider authenticates (raise CallbackAuthError if not).
        Raise CallbackRejected for a malformed body. Providers without callbacks keep this."""
        raise CallbackNotSupported(f"provider {self.account!r} takes no callbacks")

    async def record_sends(  # noqa: B027 - optional hook
        self, session: AsyncSession, provider_message_ids: Sequence[str]
    ) -> None:
        """Write these sends (ids ``send`` returned) in ``session``: the transaction that
        records their outcomes, which commits next. For providers that keep what they send
        in the platform's database (the sandbox), so that a send is stored exactly when its
        outcome is: never for a send whose outcome was lost or overtaken by a newer claim.
        Called again with the same ids if that transaction fails. Others write nothing."""

    def forget_sends(self, provider_message_ids: Sequence[str]) -> None:  # noqa: B027
        """These sends' outcomes are settled: written (and ``record_sends`` committed with
        them), or dropped as overtaken. What a provider kept for them can go."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
