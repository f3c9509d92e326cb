"""The stored outcome of a creating POST made with an ``Idempotency-Key``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONType, UTCDateTime


class IdempotentRequest(Base):
    """One (owner, route, key): the request's hash and the 2xx response it got.

    Written in the transaction that creates the resource, so neither exists without the
    other. ``response`` is NULL only inside that transaction (no one else can see it then).
    """

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("owner", "route", "key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    route: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
