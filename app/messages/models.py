from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONType, Money, NullableJSONType, UTCDateTime

# What providers report is checked against these before it is stored: PostgreSQL refuses a
# longer value (SQLite keeps it), and with it the rest of the callback's batch.
ID_LENGTH = 40
PROVIDER_ID_LENGTH = 128
CODE_LENGTH = 64
SENDER_LENGTH = 320


class Message(Base):
    """One notification to one customer; the database row is the source of truth."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_messages_owner_id", "owner", "id"),
        Index("ix_messages_customer_id_id", "customer_id", "id"),
        # the message list's status filter, newest first (migration 0011)
        Index("ix_messages_status_id", "status", "id"),
        # ix_messages_patched_reach: below, on an expression of the columns
        # experiment reports reduce a variant's messages to one row per customer: on
        # PostgreSQL an index-only scan in that order (migration 0007)
        Index(
            "ix_messages_experiment",
            "experiment_id",
            "variant",
            "customer_id",
            sqlite_where=text("experiment_id IS NOT NULL"),
            postgresql_where=text("experiment_id IS NOT NULL"),
            postgresql_include=["sent_at", "delivered_at", "clicked_at", "cost"],
        ),
        # receipts name messages by the provider's id, which only sent messages have: no
        # entry for the others, so that neither the insert nor the claim (an UPDATE that
        # PostgreSQL cannot make HOT) adds one (migration 0013)
        Index(
            "ix_messages_sent_provider_id",
            "provider_message_id",
            sqlite_where=text("provider_message_id IS NOT NULL"),
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
        # a campaign's messages newest first: the message list's filter (migration 0008)
        Index(
            "ix_messages_campaign",
            "campaign_id",
            "id",
            sqlite_where=text("campaign_id IS NOT NULL"),
            postgresql_where=text("campaign_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    scenario: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[dict[str, str]] = mapped_column(JSONType)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType)
    channels: Mapped[list[str]] = mapped_column(JSONType)
    channel_index: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str | None] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(100))
    provider_message_id: Mapped[str | None] = mapped_column(String(PROVIDER_ID_LENGTH))
    # the provider's delivery-report code (DELIVRD, success, 550...), kept as reported
    delivery_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    cost: Mapped[Decimal | None] = mapped_column(Money())
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    channel_attempts: Mapped[int] = mapped_column(Integer, default=0)
    content: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSONType)
    # a patched message's content without its patch, by channel: sent instead when the
    # customer opts out of marketing before the message goes (NULL: no patch)
    unpatched: Mapped[dict[str, dict[str, Any]] | None] = mapped_column(
        NullableJSONType, default=None
    )
    decision: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # the strategy whose marketing patch the message carries (frequency caps count these)
    patch: Mapped[str | None] = mapped_column(String(100), default=None)
    # the experiment and variant the message belongs to, and the campaign that sent it
    experiment_id: Mapped[str | None] = mapped_column(String(40), default=None)
    variant: Mapped[str | None] = mapped_column(String(64), default=None)
    campaign_id: Mapped[str | None] = mapped_column(String(40), default=None)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    # not indexed: the message list's `since` is a range of ids (time-sortable), see
    # repository.list_messages (migration 0013)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # first open (email pixel) and first click of a tracked link: counted once per message
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


# When a message reaches its customer: a scheduled one at its send time. Frequency caps count
# patches by it (a patch scheduled for next week counts next week); the index has the same
# expression, which is how SQLite and PostgreSQL match a query to it.
reaches_at = func.coalesce(Message.send_at, Message.created_at)
# frequency caps read a customer's patched messages around a time (migration 0017)
Index(
    "ix_messages_patched_reach",
    Message.customer_id,
    reaches_at,
    sqlite_where=text("patch IS NOT NULL"),
    postgresql_where=text("patch IS NOT NULL"),
)


# message_events and outbox refer to messages without a foreign key: each row is written by a
# statement that has its message in hand, and messages are never deleted; the per-row check
# cost a fifth of the worker's database time (migration 0019). Whatever deletes messages
# deletes their events and outbox rows too.


class MessageEvent(Base):
    """One step of a message's timeline (accepted, queued, sending, sent, delivered, failed...)."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[str] = mapped_column(String(40), index=True)
    type: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)


class Outbox(Base):
    """Unfinished messages. A row lives from acceptance until the message is terminal, so a
    lost job, a killed worker or a wiped Redis is always found again by the sweeper."""

    __tablename__ = "outbox"
    # The sweeper's: never enqueued and due, or enqueued before a time (0011)
    __table_args__ = (Index("ix_outbox_enqueued_due", "enqueued_at", "due_at"),)

    message_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class InboundMessage(Base):
    """A customer's reply pushed by a provider (e.g. an SMS "TD" to opt out)."""

    __tablename__ = "inbound_messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(String(SENDER_LENGTH), index=True)
    # fields.phone_key(sender): opt-outs are looked up by it (migration 0012)
    sender_key: Mapped[str | None] = mapped_column(String(SENDER_LENGTH), index=True, default=None)
    text: Mapped[str] = mapped_column(Text)
    opt_out: Mapped[bool] = mapped_column(default=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InboundCustomer(Base):
    """A customer a reply came from: one who had its sender's number (SMS) or openid
    (WeChat) when it came. Their erasure takes the reply by it, also once the number has
    changed or gone to someone else; the reply stays while another customer it names
    remains (app/callbacks/repository.py, erase_inbound)."""

    __tablename__ = "inbound_customers"

    inbound_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("inbound_messages.id", ondelete="CASCADE"), primary_key=True
    )
    # no foreign key: a profile's erasure must not wait for (or fail) a reply being stored
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
