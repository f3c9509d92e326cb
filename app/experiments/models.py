"""Experiments and their per-customer assignments as stored; assignment itself is pure
(abtest/assignment.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONType, UTCDateTime


class Experiment(Base):
    """An A/B test on one segment.

    ``kind`` "patch": the traffic of ``strategy`` is split among patch variants and a holdout;
    "campaign": a campaign sends to a sample of the segment split into variants. ``variants``
    is a list of ``{key, weight, channel, template, format, holdout}``; ``control`` names the
    variant the others are compared against (often the holdout).
    """

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    kind: Mapped[str] = mapped_column(String(16))
    segment: Mapped[str] = mapped_column(String(100))
    strategy: Mapped[str | None] = mapped_column(String(100), default=None, index=True)
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    control: Mapped[str] = mapped_column(String(64))
    # the sample: a fraction of the segment (hash coverage) and/or at most this many customers
    coverage: Mapped[float] = mapped_column(Float, default=1.0)
    sample_size: Mapped[int | None] = mapped_column(Integer, default=None)
    salt: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(16))  # delivered | clicked | converted
    conversion_event: Mapped[str | None] = mapped_column(String(64), default=None)  # None: any
    attribution_hours: Mapped[int] = mapped_column(Integer, default=72)
    confidence: Mapped[float] = mapped_column(Float, default=0.95)
    min_sample: Mapped[int] = mapped_column(Integer, default=1000)  # per variant, auto-winner
    target_lift: Mapped[float] = mapped_column(Float, default=0.1)  # relative, for power
    auto_winner: Mapped[bool] = mapped_column(Boolean, default=False)
    winner: Mapped[str | None] = mapped_column(String(64), default=None)
    # the numbers behind an automatic (or manual) winner, as decided
    winner_decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Assignment(Base):
    """The variant a customer got in an experiment: recorded once, sticky."""

    __tablename__ = "experiment_assignments"
    __table_args__ = (
        Index("ix_experiment_assignments_variant", "experiment_id", "variant"),
        # conversions without a message are attributed to the customer's last exposure
        Index("ix_experiment_assignments_customer", "customer_id", "assigned_at"),
    )

    experiment_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    variant: Mapped[str] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
