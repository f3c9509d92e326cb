"""Experiments as the API reads and writes them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.scenarios.schemas import KEY_PATTERN, TEMPLATE_KEY_PATTERN, Channel

VARIANT_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class ExperimentKind(StrEnum):
    patch = "patch"  # splits a strategy's traffic among patch variants and a holdout
    campaign = "campaign"  # a campaign sends to a sample of the segment split into variants


class ExperimentStatus(StrEnum):
    draft = "draft"
    running = "running"
    stopped = "stopped"
    completed = "completed"


class Metric(StrEnum):
    delivered = "delivered"
    clicked = "clicked"
    converted = "converted"


class VariantIn(BaseModel):
    """One arm: a channel x template x format combination, or the holdout (no patch or
    no message)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=VARIANT_KEY_PATTERN, examples=["short"])
    weight: float = Field(gt=0, le=1_000_000, description="relative; normalised by the total")
    channel: Channel | None = Field(
        default=None, description="campaign: the channel to send on; patch: only this channel"
    )
    template: str | None = Field(
        default=None,
        pattern=TEMPLATE_KEY_PATTERN,
        description="campaign: the content; patch: "
        "the patch template used instead of the strategy's",
    )
    format: str | None = Field(
        default=None, max_length=32, description="a free label: short, long, html, card..."
    )
    holdout: bool = False

    @model_validator(mode="after")
    def _holdout_is_empty(self) -> VariantIn:
        if self.holdout and self.template is not None:
            raise ValueError("a holdout gets no patch or message: give it no template")
        return self


_EXAMPLE: dict[str, Any] = {
    "key": "wealth_copy_q3",
    "name": "Wealth patch: short or long copy",
    "kind": "patch",
    "segment": "high_net_worth",
    "strategy": "wealth",
    "variants": [
        {"key": "holdout", "weight": 10, "holdout": True},
        {"key": "short", "weight": 45, "template": "wealth_short.sms", "format": "short"},
        {"key": "long", "weight": 45, "template": "wealth_long.sms", "format": "long"},
    ],
    "coverage": 0.5,
    "metric": "converted",
    "conversion_event": "fund_purchase",
    "attribution_hours": 72,
}


class ExperimentSettings(BaseModel):
    """What the analyst may still tune while an experiment runs."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    confidence: float = Field(default=0.95, ge=0.8, le=0.999)
    min_sample: int = Field(default=1000, ge=10, le=100_000_000, description="per variant")
    target_lift: float = Field(default=0.1, gt=0, le=100, description="relative, for power")
    auto_winner: bool = False


class ExperimentIn(ExperimentSettings):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    key: str = Field(pattern=KEY_PATTERN)
    kind: ExperimentKind
    segment: str = Field(pattern=KEY_PATTERN)
    strategy: str | None = Field(default=None, pattern=KEY_PATTERN)
    variants: list[VariantIn] = Field(min_length=2, max_length=10)
    control: str | None = Field(
        default=None, description="a variant key; default: the holdout if any, else the first"
    )
    coverage: float = Field(default=1.0, gt=0, le=1, description="the sampled fraction")
    sample_size: int | None = Field(default=None, gt=0, le=1_000_000_000)
    salt: str | None = Field(default=None, min_length=1, max_length=100, description="default: key")
    metric: Metric = Metric.converted
    conversion_event: str | None = Field(default=None, min_length=1, max_length=64)
    attribution_hours: int = Field(default=72, ge=1, le=2160)


class ExperimentUpdate(BaseModel):
    """Fields to change; those left out stay. Only name, description and the decision
    settings change once the experiment has started."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Wealth copy, Q3", "auto_winner": True}]},
    )

    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    confidence: float | None = Field(default=None, ge=0.8, le=0.999)
    min_sample: int | None = Field(default=None, ge=10, le=100_000_000)
    target_lift: float | None = Field(default=None, gt=0, le=100)
    auto_winner: bool | None = None
    segment: str | None = Field(default=None, pattern=KEY_PATTERN)
    strategy: str | None = Field(default=None, pattern=KEY_PATTERN)
    variants: list[VariantIn] | None = Field(default=None, min_length=2, max_length=10)
    control: str | None = None
    coverage: float | None = Field(default=None, gt=0, le=1)
    sample_size: int | None = Field(default=None, gt=0, le=1_000_000_000)
    salt: str | None = Field(default=None, min_length=1, max_length=100)
    metric: Metric | None = None
    conversion_event: str | None = Field(default=None, min_length=1, max_length=64)
    attribution_hours: int | None = Field(default=None, ge=1, le=2160)


# changeable while running or stopped; every other field only in a draft
LIVE_FIELDS = frozenset(
    {"name", "description", "confidence", "min_sample", "target_lift", "auto_winner"}
)


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"winner": "short"}]})

    winner: str | None = Field(default=None, description="a variant key: everyone gets it")


class VariantOut(BaseModel):
    key: str
    weight: float
    channel: Channel | None = None
    template: str | None = None
    format: str | None = None
    holdout: bool = False


class ExperimentOut(BaseModel):
    id: str
    key: str
    name: str | None
    description: str | None
    kind: ExperimentKind
    status: ExperimentStatus
    segment: str
    strategy: str | None
    variants: list[VariantOut]
    control: str
    coverage: float
    sample_size: int | None
    salt: str
    metric: Metric
    conversion_event: str | None
    attribution_hours: int
    confidence: float
    min_sample: int
    target_lift: float
    auto_winner: bool
    winner: str | None
    winner_decision: dict[str, Any] | None
    started_at: datetime | None
    stopped_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ExperimentList(BaseModel):
    items: list[ExperimentOut]
    next_cursor: str | None


class AssignmentOut(BaseModel):
    customer_id: str
    variant: str
    assigned_at: datetime


class AssignmentList(BaseModel):
    items: list[AssignmentOut]
    next_cursor: str | None
