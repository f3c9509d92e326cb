"""Conversions as the API takes and gives them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.timeutil import ApiTime

MONEY_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"  # fits the Money column: NUMERIC(18, 6)


class ConversionIn(BaseModel):
    """A business outcome: a product bought, a card activated, a loan drawn."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C0001",
                    "event": "wealth_purchase",
                    "value": "50000.00",
                    "occurred_at": "2026-11-23T10:15:00+08:00",
                    "message_id": "msg_01JD3T6Q6F8X0M2N4P6R8S0T2V",
                }
            ]
        },
    )

    customer_id: str = Field(min_length=1, max_length=64, examples=["C0001"])
    event: str = Field(min_length=1, max_length=64, examples=["wealth_purchase"])
    value: str | None = Field(
        default=None, pattern=MONEY_PATTERN, description="decimal string", examples=["50000.00"]
    )
    occurred_at: ApiTime | None = Field(
        default=None, description="RFC 3339 with an offset; default now; not in the future"
    )
    message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="the message that led to it; without: the customer's last exposure",
    )

    @field_validator("customer_id", "event", "message_id")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        if value is not None and not 1970 <= value.year <= 9998:
            raise ValueError("must be between 1970 and 9998")
        return value


class Attribution(BaseModel):
    """The message and/or experiment variant a conversion is credited to."""

    message_id: str | None
    experiment_id: str | None
    experiment: str | None = Field(description="the experiment's key")
    variant: str | None


class ConversionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "cnv_01JD3V2X4Z6B8D0F2H4K6M8P0R",
                    "customer_id": "C0001",
                    "event": "wealth_purchase",
                    "value": "50000.00",
                    "occurred_at": "2026-11-23T02:15:00Z",
                    "attributed": {
                        "message_id": "msg_01JD3T6Q6F8X0M2N4P6R8S0T2V",
                        "experiment_id": "exp_01JD3S0A2C4E6G8J0L2N4Q6S8U",
                        "experiment": "wealth_patch_ab",
                        "variant": "b",
                    },
                }
            ]
        }
    )

    id: str
    customer_id: str
    event: str
    value: str | None
    occurred_at: datetime
    attributed: Attribution | None = Field(description="null: no message and no exposure")


class ConversionBatchIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"items": [{"customer_id": "C0001", "event": "card_activated", "value": "0"}]}
            ]
        }
    )

    items: list[Any] = Field(
        min_length=1, description="up to 10,000 conversions, each validated on its own"
    )


class ConversionBatchItem(BaseModel):
    index: int
    conversion: ConversionOut | None = None
    replayed: bool = False
    error: str | None = None
    detail: str | None = None
    fields: list[dict[str, str]] | None = None


class ConversionBatchOut(BaseModel):
    accepted: int
    rejected: int
    items: list[ConversionBatchItem]


class ConversionList(BaseModel):
    items: list[ConversionOut]
    next_cursor: str | None
