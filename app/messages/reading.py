"""Reading messages back: one with its timeline, or a filtered page; the API shape."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.schemas import Role
from app.auth.service import Principal
from app.errors import NotFound
from app.masking import mask_contact
from app.messages import repository
from app.messages.compose import initial_events
from app.messages.models import Message
from app.messages.schemas import EventOut, MessageDetail, MessageOut, MessageStatus


def can_read(principal: Principal, message: Message) -> bool:
    """Whether the principal may read the message: system keys their own messages only."""
    return principal.role != Role.system or message.owner == principal.owner


async def get_message(
    session: AsyncSession, message_id: str, *, principal: Principal
) -> MessageDetail:
    message = await repository.by_id(session, message_id)
    if message is None or not can_read(principal, message):
        raise NotFound(f"no message {message_id!r}")
    events = await repository.events_of(session, message_id)
    keys = await repository.experiment_keys(session, [message.experiment_id])
    return MessageDetail(
        **to_out(message, keys).model_dump(),
        events=[EventOut(**e) for e in initial_events(message)]
        + [EventOut(type=e.type, at=e.at, detail=e.detail) for e in events],
    )


async def list_messages(
    session: AsyncSession,
    *,
    principal: Principal,
    customer_id: str | None,
    scenario: str | None,
    status: MessageStatus | None,
    since: datetime | None,
    before_id: str | None,
    limit: int,
    experiment_id: str | None = None,
    campaign_id: str | None = None,
) -> list[MessageOut]:
    """A page of the messages the principal may read, newest first."""
    rows = await repository.list_page(
        session,
        owner=principal.owner if principal.role == Role.system else None,
        customer_id=customer_id,
        scenario=scenario,
        status=status.value if status else None,
        since=since,
        before_id=before_id,
        limit=limit,
        experiment_id=experiment_id,
        campaign_id=campaign_id,
    )
    keys = await repository.experiment_keys(session, [m.experiment_id for m in rows])
    return [to_out(m, keys) for m in rows]


def to_out(message: Message, experiment_keys: Mapping[str, str] | None = None) -> MessageOut:
    """The API shape of a stored message; ``experiment_keys``: experiment id -> key (a
    deleted experiment's key is None)."""
    keys = experiment_keys or {}
    return MessageOut(
        id=message.id,
        status=MessageStatus(message.status),
        status_reason=message.status_reason,
        scenario=message.scenario,
        customer_id=message.customer_id,
        recipient={k: mask_contact(k, v) for k, v in message.recipient.items()},
        channels=message.channels,
        channel=message.channel,
        provider=message.provider,
        provider_message_id=message.provider_message_id,
        content=message.content,
        attempts=message.attempts,
        decision=message.decision,
        send_at=message.send_at,
        created_at=message.created_at,
        updated_at=message.updated_at,
        sent_at=message.sent_at,
        delivered_at=message.delivered_at,
        opened_at=message.opened_at,
        clicked_at=message.clicked_at,
        experiment_id=message.experiment_id,
        experiment=keys.get(message.experiment_id or ""),
        variant=message.variant,
        campaign_id=message.campaign_id,
    )
