from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.customers import fields
from app.customers.attributes import ATTRIBUTE_NAME_PATTERN, AttributeType
from app.customers.consent import Purpose
from app.scenarios.schemas import Channel
from strategies.attributes import DEFAULT_TIMEZONE


def _rule(check: Callable[[str], str]) -> AfterValidator:
    def run(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check(value)
        except fields.InvalidField as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(run)


def _tags(values: list[str]) -> list[str]:
    try:
        return fields.tags(values)
    except fields.InvalidField as exc:
        raise ValueError(str(exc)) from None


CUSTOMER_EXAMPLE: dict[str, Any] = {
    "name": "张伟",
    "phone": "13800000001",
    "email": "zhang.wei@example.com",
    "wechat_openid": "oDemo0000000000000000000001",
    "locale": "zh-CN",
    "timezone": "Asia/Shanghai",
    "attributes": {"aum": "1200000.00", "tier": "private", "payroll": True},
    "tags": ["payroll", "wealth"],
}


class CustomerIn(BaseModel):
    """The whole profile: PUT replaces every field (a field left out gets its default).
    Consent is kept; it changes through opt-out and opt-in."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [CUSTOMER_EXAMPLE]})

    name: Annotated[str | None, _rule(fields.name)] = Field(default=None, max_length=200)
    phone: Annotated[str | None, _rule(fields.phone)] = Field(
        default=None, examples=["13800000001"]
    )
    email: Annotated[str | None, _rule(fields.email)] = None
    wechat_openid: Annotated[str | None, _rule(fields.wechat_openid)] = None
    locale: Annotated[str, _rule(fields.locale)] = fields.DEFAULT_LOCALE
    timezone: Annotated[str, _rule(fields.timezone)] = Field(
        default=DEFAULT_TIMEZONE, description="IANA time zone (quiet hours)"
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="declared attributes only (GET /v1/customer-attributes); numbers may be "
        "decimal strings",
    )
    tags: Annotated[list[str], AfterValidator(_tags)] = Field(default_factory=list)


class Decision(BaseModel):
    granted: bool
    source: str = Field(description='"default", "api:<owner>", "sms_reply:<provider>"')
    updated_at: datetime | None = Field(description="when it was recorded; null for a default")


class ChannelConsent(BaseModel):
    transactional: Decision
    marketing: Decision


class ConsentOut(BaseModel):
    sms: ChannelConsent
    email: ChannelConsent
    wechat: ChannelConsent


class CustomerOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "C0001",
                    **CUSTOMER_EXAMPLE,
                    "consent": {
                        ch: {
                            "transactional": {
                                "granted": True,
                                "source": "default",
                                "updated_at": None,
                            },
                            "marketing": {"granted": True, "source": "default", "updated_at": None},
                        }
                        for ch in ("sms", "email", "wechat")
                    },
                    "created_at": "2026-11-23T08:30:00Z",
                    "updated_at": "2026-11-23T08:30:00Z",
                }
            ]
        }
    )

    id: str
    name: str | None
    phone: str | None
    email: str | None
    wechat_openid: str | None
    locale: str
    timezone: str
    attributes: dict[str, Any] = Field(description="numbers as decimal strings")
    tags: list[str]
    consent: ConsentOut
    created_at: datetime
    updated_at: datetime


class CustomerSummary(BaseModel):
    """A list entry: names and contact points masked (张*, 138****0001)."""

    id: str
    name: str | None
    phone: str | None
    email: str | None
    wechat_openid: str | None
    locale: str
    timezone: str
    tags: list[str]
    created_at: datetime
    updated_at: datetime


class CustomerList(BaseModel):
    items: list[CustomerSummary]
    next_cursor: str | None


class ConsentChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"channel": "sms", "purpose": "marketing"}]}
    )

    channel: Channel | None = Field(default=None, description="all channels when left out")
    purpose: Purpose = Purpose.marketing


class RowError(BaseModel):
    line: int = Field(description="line of the file where the row starts (the header is line 1)")
    field: str
    message: str


class ImportSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "rows": 3,
                    "inserted": 1,
                    "updated": 1,
                    "unchanged": 0,
                    "failed": 1,
                    "errors": [{"line": 4, "field": "aum", "message": "must be a number (number)"}],
                    "errors_truncated": False,
                }
            ]
        }
    )

    rows: int = Field(description="data rows read")
    inserted: int
    updated: int
    unchanged: int = Field(description="rows equal to what was stored (nothing written)")
    failed: int
    errors: list[RowError] = Field(description="the first errors, in file order")
    errors_truncated: bool = Field(description="more errors than listed")


class ErasureResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C0001",
                    "profile_erased": True,
                    "messages_anonymized": 42,
                    "messages_cancelled": 0,
                    "inbound_replies_erased": 1,
                    "opt_outs_kept": 1,
                }
            ]
        }
    )

    customer_id: str
    profile_erased: bool = Field(description="false when there was no profile")
    messages_anonymized: int = Field(
        description="messages whose recipient, variables and content were erased; status, "
        "channel, cost and times are kept, under an anonymous customer id"
    )
    messages_cancelled: int = Field(description="unfinished messages failed instead of sent")
    inbound_replies_erased: int
    opt_outs_kept: int = Field(
        description="SMS opt-out replies from the customer's number kept as suppression "
        "records (the number and the time only): the number stays opted out of marketing"
    )


class AttributeIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"type": "number", "description": "assets under management, CNY"}]
        },
    )

    type: AttributeType
    description: str | None = Field(default=None, max_length=1000)


class AttributeOut(BaseModel):
    name: str = Field(pattern=ATTRIBUTE_NAME_PATTERN)
    type: AttributeType
    description: str | None
    created_at: datetime
    updated_at: datetime


class AttributeList(BaseModel):
    items: list[AttributeOut]
    next_cursor: str | None
