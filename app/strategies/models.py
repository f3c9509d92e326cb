"""Segments and strategies as stored; the pure logic lives in the top-level `strategies`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONType, UTCDateTime


class Segment(Base):
    """A named rule over customer attributes (strategies/rules.py)."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    rule: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Strategy(Base):
    """Scenario + segment -> a patch template per channel, with priority, an active window,
    allowed channels and a frequency cap."""

    __tablename__ = "strategies"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    scenario: Mapped[str] = mapped_column(String(64), index=True)
    segment: Mapped[str] = mapped_column(String(100), index=True)
    # channel -> patch template key
    patch_templates: Mapped[dict[str, str]] = mapped_column(JSONType)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    status: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # {"start": "HH:MM", "end": "HH:MM"} in the customer's timezone
    hours: Mapped[dict[str, str] | None] = mapped_column(JSONType, default=None)
    channels: Mapped[list[str] | None] = mapped_column(JSONType, default=None)
    cap_max: Mapped[int | None] = mapped_column(Integer, default=None)
    cap_days: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
