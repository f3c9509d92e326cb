"""Template storage: a template (key, channel, declared variables) and its versions.

A version is a draft (editable) or published (immutable); the template's current version
is its newest published one, and that is what scenarios send.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONType, UTCDateTime

DRAFT = "draft"
PUBLISHED = "published"


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    # declared variables ([{name, type, description}]) that new versions start from; a
    # publish makes them those of the published version
    variables: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    current_version: Mapped[int | None] = mapped_column(Integer, default=None)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TemplateVersion(Base):
    """Content for one channel: ``body`` (and ``subject`` for email) plus channel specifics
    in ``options`` (email html, SMS provider template codes, WeChat template mapping)."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    template_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("templates.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    variables: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    subject: Mapped[str | None] = mapped_column(Text, default=None)
    body: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
