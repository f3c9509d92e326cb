from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.scenarios.schemas import Channel
from app.timeutil import ApiTime

PHONE_PATTERN = r"^\+?[0-9]{5,20}$"
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"
OPENID_PATTERN = r"^[A-Za-z0-9_-]{6,64}$"


class MessageStatus(StrEnum):
    scheduled = "scheduled"
    queued = "queued"
    sending = "sending"
    retrying = "retrying"
    sent = "sent"
    delivered = "delivered"
    failed = "failed"


TERMINAL_STATUSES = frozenset({MessageStatus.sent, MessageStatus.delivered, MessageStatus.failed})


class Recipient(BaseModel):
    """Contact points; they override the customer's stored ones."""

    model_config = ConfigDict(extra="forbid")

    phone: str | None = Field(default=None, pattern=PHONE_PATTERN, examples=["13800000000"])
    email: str | None = Field(
        default=None, pattern=EMAIL_PATTERN, max_length=320, examples=["zhang.san@example.com"]
    )
    wechat_openid: str | None = Field(default=None, pattern=OPENID_PATTERN)


def _unstorable(value: Any, depth: int = 0) -> str | None:
    """Why a JSON value cannot be stored as is (databases refuse NUL in text, JSON columns
    64-bit integers), or None."""
    if depth > 20:
        return "nested too deeply"
    if isinstance(value, str):
        if "\x00" in value:
            return "text must not contain NUL characters"
        return None if value.isascii() or _encodable(value) else "text must be valid Unicode"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else "integers must fit in 64 bits"
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        problem = _unstorable(key, depth + 1) if isinstance(key, str) else None
        problem = problem or _unstorable(item, depth + 1)
        if problem:
            return problem
    return None


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _encodable(text: str) -> bool:
    """Whether the text has no lone surrogate (JSON may escape one, as "\\ud800"; UTF-8,
    and so the databases, cannot hold it)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class MessageItem(BaseModel):
    """One message of a batch (the scenario is given once for the batch)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=64, examples=["C0001"])
    recipient: Recipient | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    channels: list[Channel] | None = Field(
        default=None, min_length=1, description="restrict and reorder the scenario's channels"
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    send_at: ApiTime | None = Field(default=None, description="RFC 3339 with an offset")
    profile: dict[str, Any] | None = Field(
        default=None,
        description="attributes for the marketing patch decision, over the stored profile's; "
        "used for this message only, never stored",
        examples=[{"aum": 800000, "tags": ["payroll"]}],
    )

    @field_validator("customer_id", "idempotency_key")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return None if value is None else _without_nul(value)

    @field_validator("variables", "profile")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = _unstorable(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


class MessageCreate(MessageItem):
    scenario: str = Field(min_length=1, max_length=64, examples=["account_movement"])

    @field_validator("scenario")
    @classmethod
    def _scenario_no_nul(cls, value: str) -> str:
        # the route skips the NUL guard (app/nul_guard.py): its model checks every field
        return _without_nul(value)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "scenario": "account_movement",
                    "customer_id": "C0001",
                    "variables": {
                        "account_tail": "1234",
                        "direction": "支出",
                        "amount": "1200.00",
                        "balance": "35200.50",
                    },
                }
            ]
        },
    )


class MessageAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "msg_01JD3T6Q6F8X0M2N4P6R8S0T2V",
                    "status": "queued",
                    "scenario": "account_movement",
                    "customer_id": "C0001",
                    "channels": ["wechat", "sms"],
                    "send_at": None,
                    "created_at": "2026-11-23T08:30:00Z",
                }
            ]
        }
    )

    id: str
    status: MessageStatus
    scenario: str
    customer_id: str
    channels: list[str]
    send_at: datetime | None = None
    created_at: datetime


class EventOut(BaseModel):
    type: str
    at: datetime
    detail: dict[str, Any]


_MESSAGE_EXAMPLE: dict[str, Any] = {
    "id": "msg_01JD3T6Q6F8X0M2N4P6R8S0T2V",
    "status": "delivered",
    "status_reason": None,
    "scenario": "account_movement",
    "customer_id": "C0001",
    "recipient": {"phone": "138****0000"},
    "channels": ["sms"],
    "channel": "sms",
    "provider": "sandbox_sms:main",
    "provider_message_id": "sbx-7f3a",
    "content": {"sms": {"body": "【示例银行】您尾号1234的账户支出1200.00元…稳健理财年化3.2%"}},
    "attempts": 1,
    "decision": {"strategy": "wealth", "experiment": "wealth_copy", "variant": "short"},
    "send_at": None,
    "created_at": "2026-11-23T08:30:00Z",
    "updated_at": "2026-11-23T08:30:02Z",
    "sent_at": "2026-11-23T08:30:01Z",
    "delivered_at": "2026-11-23T08:30:02Z",
    "opened_at": None,
    "clicked_at": "2026-11-23T09:12:45Z",
    "experiment_id": "exp_01JD3SZ4B2C6D8F0G2H4J6K8M0",
    "experiment": "wealth_copy",
    "variant": "short",
    "campaign_id": None,
}


class MessageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_MESSAGE_EXAMPLE]})

    id: str
    status: MessageStatus
    status_reason: str | None
    scenario: str
    customer_id: str
    recipient: dict[str, str] = Field(description="masked contact points")
    channels: list[str] = Field(description="channels to try, in order")
    channel: str | None = Field(description="channel of the last attempt")
    provider: str | None
    provider_message_id: str | None
    content: dict[str, dict[str, Any]] = Field(description="rendered content per channel")
    attempts: int
    decision: dict[str, Any]
    send_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None = Field(description="first open (email pixel)")
    clicked_at: datetime | None = Field(description="first click of a tracked link")
    experiment_id: str | None = Field(description="the experiment the message counts for")
    experiment: str | None = Field(description="that experiment's key")
    variant: str | None = Field(description="its variant in that experiment (or the holdout)")
    campaign_id: str | None = Field(description="the campaign that sent it")


class MessageDetail(MessageOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                _MESSAGE_EXAMPLE
                | {
                    "events": [
                        {"type": "accepted", "at": "2026-11-23T08:30:00Z", "detail": {}},
                        {"type": "sent", "at": "2026-11-23T08:30:01Z", "detail": {}},
                        {"type": "clicked", "at": "2026-11-23T09:12:45Z", "detail": {}},
                    ]
                }
            ]
        }
    )

    events: list[EventOut] = Field(description="the timeline, oldest first")


class MessageList(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class BatchCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "scenario": "account_movement",
                    "items": [
                        {
                            "customer_id": "C0001",
                            "idempotency_key": "core-20261123-000001",
                            "variables": {
                                "account_tail": "1234",
                                "direction": "收入",
                                "amount": "8500.00",
                                "balance": "43700.50",
                            },
                        }
                    ],
                }
            ]
        }
    )

    scenario: str = Field(min_length=1, max_length=64)
    items: list[Any] = Field(
        min_length=1, description="up to 10,000 items, each validated on its own"
    )


class BatchItemResult(BaseModel):
    index: int
    id: str | None = None
    status: MessageStatus | None = None
    replayed: bool = False
    error: str | None = None
    detail: str | None = None
    fields: list[dict[str, str]] | None = None


class BatchResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": 1,
                    "rejected": 1,
                    "items": [
                        {"index": 0, "id": "msg_01JD3T6Q6F8X0M2N4P6R8S0T2V", "status": "queued"},
                        {
                            "index": 1,
                            "error": "ValidationError",
                            "detail": "variables.amount: required by the scenario",
                            "fields": [
                                {"field": "variables.amount", "message": "required by the scenario"}
                            ],
                        },
                    ],
                }
            ]
        }
    )

    accepted: int
    rejected: int
    items: list[BatchItemResult]
