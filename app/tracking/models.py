"""Tracked links, open pixels and conversions as stored."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Money, UTCDateTime


class TrackedLink(Base):
    """A short token standing for one link (``kind`` "link") or the open pixel ("open") of
    one message: ``/t/{token}`` redirects to ``url``, ``/o/{token}`` serves the pixel."""

    __tablename__ = "tracked_links"

    token: Mapped[str] = mapped_column(String(16), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))
    url: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Conversion(Base):
    """A business outcome reported by the bank (a product bought, a loan drawn), attributed
    to the experiment and variant of a message or of the customer's last exposure."""

    __tablename__ = "conversions"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_conversions_experiment_variant", "experiment_id", "variant"),
        Index("ix_conversions_customer_occurred", "customer_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    customer_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    value: Mapped[Decimal | None] = mapped_column(Money(), default=None)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    message_id: Mapped[str | None] = mapped_column(String(40), default=None)
    experiment_id: Mapped[str | None] = mapped_column(String(40), default=None)
    variant: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
