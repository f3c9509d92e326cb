"""Campaigns as stored: a throttled, scheduled broadcast to a segment (or a sample of it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONType, UTCDateTime


class Campaign(Base):
    """``scenario`` (a marketing scenario) gives the content, ``template`` may replace it;
    ``experiment`` splits the audience into variants. ``cursor`` is the last customer id
    processed, so a restarted runner resumes where it stopped."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    scenario: Mapped[str] = mapped_column(String(64))
    template: Mapped[str | None] = mapped_column(String(100), default=None)
    segment: Mapped[str] = mapped_column(String(100))
    experiment: Mapped[str | None] = mapped_column(String(100), default=None, index=True)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType)
    sample_fraction: Mapped[float | None] = mapped_column(Float, default=None)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    rate_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    respect_quiet_hours: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    cursor: Mapped[str | None] = mapped_column(String(64), default=None)
    audience: Mapped[int | None] = mapped_column(Integer, default=None)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)  # messages created
    held_out: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    # messages a cancel stopped before they went
    cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # with a rate, the backlog of messages deferred by quiet hours (migration 0016): from when
    # it is released, and when its next message may go
    release_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    release_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
