from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.messages.models import CODE_LENGTH, ID_LENGTH, PROVIDER_ID_LENGTH


class EarlyReceipt(Base):
    """A delivery receipt that came before the worker recorded its send (the message still
    queued or sending, or the provider's id not written yet). The sweeper applies it once
    the message is sent, or drops it after ``queue.early_receipt_ttl``."""

    __tablename__ = "early_receipts"
    __table_args__ = (
        # the sweeper joins them to messages by our id or by the provider's id
        Index(
            "ix_early_receipts_message_id",
            "message_id",
            sqlite_where=text("message_id IS NOT NULL"),
            postgresql_where=text("message_id IS NOT NULL"),
        ),
        Index(
            "ix_early_receipts_provider_message_id",
            "provider",
            "provider_message_id",
            sqlite_where=text("message_id IS NULL"),
            postgresql_where=text("message_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    provider: Mapped[str] = mapped_column(String(100))
    message_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    provider_message_id: Mapped[str | None] = mapped_column(String(PROVIDER_ID_LENGTH))
    delivered: Mapped[bool] = mapped_column()
    code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    detail: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
