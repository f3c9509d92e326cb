from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.scenarios.schemas import KEY_PATTERN, Channel
from app.timeutil import ApiTime

HOUR_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"
_EXAMPLE_RULE: dict[str, Any] = {
    "all": [
        {"field": "aum", "op": "gte", "value": 500000},
        {"not": {"field": "tags", "op": "contains", "value": "staff"}},
    ]
}


class SegmentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"key": "high_net_worth", "name": "高净值客户", "rule": _EXAMPLE_RULE},
                {
                    "key": "new_customers",
                    "name": "90天内开户客户",
                    "rule": {"field": "opened_on", "op": "gte", "value": {"days": -90}},
                },
            ]
        },
    )

    key: str = Field(pattern=KEY_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    rule: dict[str, Any] = Field(
        description="a rule tree: all/any/not of {field, op, value}; ops eq ne gt gte lt lte "
        "in not_in contains exists between anniversary; a date or datetime value may be "
        "relative: "
        '{"days": -90} (the bank calendar day, Asia/Shanghai, minus 90 days), {"hours": -6} '
        "(datetimes only)"
    )


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    rule: dict[str, Any]


class SegmentOut(BaseModel):
    id: str
    key: str
    name: str | None
    description: str | None
    rule: dict[str, Any]
    fields: list[str] = Field(description="the attributes the rule reads")
    created_at: datetime
    updated_at: datetime


class SegmentList(BaseModel):
    items: list[SegmentOut]
    next_cursor: str | None


class SegmentCount(BaseModel):
    key: str
    count: int


class SampleCustomer(BaseModel):
    """A matching customer, contacts and name masked."""

    id: str
    name: str | None
    phone: str | None
    email: str | None
    locale: str
    timezone: str


class SegmentSample(BaseModel):
    key: str
    items: list[SampleCustomer]


class StrategyStatus(StrEnum):
    draft = "draft"
    active = "active"
    paused = "paused"


class HoursIn(BaseModel):
    """Hours of the day in the customer's timezone; an end before the start wraps midnight."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=HOUR_PATTERN, examples=["09:00"])
    end: str = Field(pattern=HOUR_PATTERN, examples=["21:00"])


class FrequencyCapIn(BaseModel):
    """At most `max_patches` patches per customer in `days` days, across all strategies."""

    model_config = ConfigDict(extra="forbid")

    max_patches: int = Field(ge=1, le=1000)
    days: int = Field(ge=1, le=365)


class StrategyBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    scenario: str = Field(pattern=KEY_PATTERN)
    segment: str = Field(pattern=KEY_PATTERN)
    patch_templates: dict[Channel, str] = Field(
        min_length=1, description="channel -> the key of a published patch template"
    )
    priority: int = Field(default=100, ge=0, le=1_000_000, description="lower wins first")
    status: StrategyStatus = StrategyStatus.draft
    starts_at: ApiTime | None = None
    ends_at: ApiTime | None = None
    hours: HoursIn | None = None
    channels: list[Channel] | None = Field(
        default=None, min_length=1, description="allowed channels; unset: every channel"
    )
    frequency_cap: FrequencyCapIn | None = None

    @model_validator(mode="after")
    def _window(self) -> StrategyBase:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    @field_validator("patch_templates")
    @classmethod
    def _template_keys(cls, value: dict[Channel, str]) -> dict[Channel, str]:
        for key in value.values():
            if not re.fullmatch(r"[a-z][a-z0-9_.]{1,99}", key):
                raise ValueError(f"{key!r} is not a template key")
        return value


class StrategyIn(StrategyBase):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "wealth_patch",
                    "scenario": "account_movement",
                    "segment": "high_net_worth",
                    "patch_templates": {"sms": "wealth_patch.sms"},
                    "priority": 10,
                    "status": "active",
                    "hours": {"start": "08:00", "end": "21:00"},
                    "frequency_cap": {"max_patches": 2, "days": 7},
                }
            ]
        },
    )

    key: str = Field(pattern=KEY_PATTERN)


class StrategyOut(StrategyBase):
    id: str
    key: str
    created_at: datetime
    updated_at: datetime


class StrategyList(BaseModel):
    items: list[StrategyOut]
    next_cursor: str | None


class ExplainIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"scenario": "account_movement", "customer_id": "C0001"}]},
    )

    scenario: str = Field(pattern=KEY_PATTERN)
    customer_id: str | None = Field(default=None, min_length=1, max_length=64)
    profile: dict[str, Any] | None = Field(
        default=None, description="attributes to decide with instead of a stored customer's"
    )
    at: ApiTime | None = Field(default=None, description="default: now")

    @model_validator(mode="after")
    def _someone(self) -> ExplainIn:
        if self.customer_id is None and self.profile is None:
            raise ValueError("give a customer_id or a profile")
        return self


class EvaluationOut(BaseModel):
    strategy: str
    matched: bool
    reason: str
    detail: str | None = None


class ExperimentArmOut(BaseModel):
    """The customer's place in the winning strategy's live patch experiment (not recorded)."""

    experiment: str = Field(description="the experiment's key")
    variant: str | None = Field(description="the customer's variant; null outside the sample")
    in_sample: bool
    holdout: bool = Field(description="the variant gets no patch")
    patch_template: str | None = Field(
        description="the variant's patch template on this channel; null: no patch (holdout) "
        "or the strategy's own (outside the sample, or a variant of another channel)"
    )
    reason: str | None = Field(default=None, description="why not in the sample, or not here")


class ChannelDecision(BaseModel):
    channel: str
    strategy: str | None
    patch_template: str | None
    no_patch: str | None
    evaluations: list[EvaluationOut]
    experiment: ExperimentArmOut | None = Field(
        default=None, description="set when the winning strategy has a live patch experiment"
    )


class ExplainOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "scenario": "account_movement",
                    "customer_id": "C0001",
                    "at": "2026-11-23T02:00:00Z",
                    "channels": [
                        {
                            "channel": "sms",
                            "strategy": "wealth",
                            "patch_template": "wealth_patch.sms",
                            "no_patch": None,
                            "evaluations": [
                                {"strategy": "wealth", "matched": True, "reason": "matched"},
                                {"strategy": "loan", "matched": False, "reason": "not_tried"},
                            ],
                            "experiment": {
                                "experiment": "wealth_copy",
                                "variant": "short",
                                "in_sample": True,
                                "holdout": False,
                                "patch_template": "wealth_short.sms",
                                "reason": None,
                            },
                        }
                    ],
                }
            ]
        }
    )

    scenario: str
    customer_id: str | None
    at: datetime
    channels: list[ChannelDecision]


class DryRunIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"scenario": "account_movement", "sample_size": 1000}]},
    )

    scenario: str = Field(pattern=KEY_PATTERN)
    segment: str | None = Field(
        default=None, pattern=KEY_PATTERN, description="sample from this segment; unset: all"
    )
    sample_size: int = Field(default=1000, ge=1, le=10_000)
    at: ApiTime | None = None


class DryRunOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "scenario": "account_movement",
                    "sampled": 1000,
                    "at": "2026-11-23T02:00:00Z",
                    "channels": {"sms": {"wealth": 412, "loan": 301, "none:no_strategy": 287}},
                    "experiments": {
                        "wealth_copy": {
                            "short": 168,
                            "long": 164,
                            "holdout": 39,
                            "outside_sample": 41,
                        }
                    },
                }
            ]
        }
    )

    scenario: str
    sampled: int
    at: datetime
    channels: dict[str, dict[str, int]] = Field(
        description="channel -> strategy key (or `none:<reason>`) -> customers"
    )
    experiments: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="experiment key -> variant (or `outside_sample`) -> customers, for the "
        "customers whose winning strategy has a live patch experiment (counted once each)",
    )
