"""Bank customers: contact points, attributes and tags used for decisions, consent, and the
declared attribute schema."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONType, UTCDateTime


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    # indexed: an SMS opt-out reply finds its customers by phone
    phone: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    wechat_openid: Mapped[str | None] = mapped_column(String(64), default=None)
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    # declared attributes only (see app/customers/attributes.py for the stored forms)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # a sorted JSON array of strings
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True, slots=True)
class CustomerView:
    """A stored customer as accepting reads it: contacts, profile and time zone, read
    without the ORM (repository.get_many), whose per-object work cost three times the
    query for a group of sends."""

    id: str
    name: str | None
    phone: str | None
    email: str | None
    wechat_openid: str | None
    locale: str
    timezone: str
    attributes: dict[str, Any]
    tags: list[str]


# what the send path takes: the stored customer, read either way
StoredCustomer = Customer | CustomerView


class CustomerConsent(Base):
    """An explicit consent decision for one channel and purpose. Without a row the default
    applies (transactional granted; marketing per ``customers.marketing_consent_default``)."""

    __tablename__ = "customer_consents"

    customer_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    # who recorded it: "api:<owner>", "sms_reply:<provider>", ...
    source: Mapped[str] = mapped_column(String(120))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CustomerAttribute(Base):
    """A declared attribute: profiles are validated against these, segments checked."""

    __tablename__ = "customer_attributes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CustomerErasure(Base):
    """An erasure under way (PostgreSQL): sends of the customer are refused meanwhile; the
    erasure deletes the row in its own transaction (app/customers/repository.py)."""

    __tablename__ = "customer_erasures"

    # no foreign key: the profile goes in the erasure, and customers need not have one
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # when the erasure started, then its last renewal: one not renewed for
    # repository.ERASURE_MARKER_TTL died
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
