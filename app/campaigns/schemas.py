"""Campaigns as the API shows them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.messages.schemas import _unstorable
from app.scenarios.schemas import KEY_PATTERN, TEMPLATE_KEY_PATTERN
from app.timeutil import ApiTime


class CampaignStatus(StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    running = "running"
    paused = "paused"
    completed = "completed"
    cancelled = "cancelled"


FINAL_STATUSES = frozenset({CampaignStatus.completed, CampaignStatus.cancelled})

_EXAMPLE: dict[str, Any] = {
    "key": "wealth_autumn",
    "name": "秋季理财推广",
    "scenario": "wealth_offer",
    "segment": "high_net_worth",
    "experiment": "wealth_channels",
    "variables": {"product": "稳健理财"},
    "starts_at": "2026-10-01T09:00:00+08:00",
    "rate_per_second": 200,
}


class _Fields(BaseModel):
    """What a draft may change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    template: str | None = Field(
        default=None,
        pattern=TEMPLATE_KEY_PATTERN,
        description="a published template replacing the scenario's content for its channel",
    )
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="a campaign experiment: its sample and variants decide who gets what",
    )
    variables: dict[str, Any] = Field(
        default_factory=dict, description="the scenario's variables, the same for everyone"
    )
    sample_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="send to this random fraction of the segment (ignored with an experiment)",
    )
    starts_at: ApiTime | None = Field(default=None, description="RFC 3339; default: now")
    rate_per_second: float | None = Field(
        default=None, gt=0, le=100_000, description="messages created per second at most"
    )
    respect_quiet_hours: bool = Field(
        default=True, description="customers in their quiet hours get the message at its end"
    )

    @field_validator("variables")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = _unstorable(value)
        if problem:
            raise ValueError(problem)
        return value


class CampaignIn(_Fields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    key: str = Field(pattern=KEY_PATTERN)
    scenario: str = Field(pattern=KEY_PATTERN, description="a marketing scenario")
    segment: str = Field(pattern=KEY_PATTERN)


class CampaignUpdate(_Fields):
    """A partial change of a draft: only the fields given change."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"rate_per_second": 50}]}
    )

    scenario: str | None = Field(default=None, pattern=KEY_PATTERN)
    segment: str | None = Field(default=None, pattern=KEY_PATTERN)


class CampaignOut(BaseModel):
    id: str
    key: str
    name: str | None
    scenario: str
    template: str | None
    segment: str
    experiment: str | None
    variables: dict[str, Any]
    sample_fraction: float | None
    starts_at: datetime | None
    rate_per_second: float | None
    respect_quiet_hours: bool
    status: CampaignStatus
    audience: int | None = Field(description="segment size when started")
    processed: int = Field(description="customers of the segment gone through")
    sent: int = Field(description="messages created")
    held_out: int = Field(description="customers in a holdout variant: assigned, no message")
    skipped: int = Field(description="customers refused (no consent, contact or variables)")
    cancelled: int = Field(
        default=0,
        description="messages a cancel stopped before they went (e.g. waiting for the end of "
        "quiet hours)",
    )
    percent: float = Field(description="processed / audience, 0-100")
    last_error: str | None = Field(description="the first reason a customer was skipped")
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime


class CampaignList(BaseModel):
    items: list[CampaignOut]
    next_cursor: str | None
