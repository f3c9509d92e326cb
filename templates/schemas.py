"""API shapes of templates, their versions and the preview."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict, JsonValue

from app.errors import FieldError
from app.scenarios.schemas import (
    TEMPLATE_KEY_PATTERN,
    Channel,
    TemplateIn,
    VariableSpec,
)
from templates.filters import DEFAULT_TIMEZONE, FilterError, zone

_SMS_CONTENT: JsonDict = {
    "body": "【示例银行】您尾号{{ account_tail }}的账户于{{ at|datetime('%m月%d日%H:%M') }}"
    "{{ direction }}{{ amount|money }}，余额{{ balance|money }}。",
    "provider_templates": {
        "aliyun_sms": {
            "template_code": "SMS_276450123",
            "params": {"tail": "{{ account_tail }}", "amount": "{{ amount|money }}"},
        }
    },
}
_VARIABLES: list[JsonValue] = [
    {"name": "account_tail", "type": "string"},
    {"name": "at", "type": "datetime"},
    {"name": "direction", "type": "string", "description": "收入 or 支出"},
    {"name": "amount", "type": "decimal"},
    {"name": "balance", "type": "decimal"},
]
_SAMPLE: JsonDict = {
    "account_tail": "1234",
    "at": "2025-01-01T09:30:00+08:00",
    "direction": "支出",
    "amount": "1200.00",
    "balance": "35200.50",
}


class VersionStatus(StrEnum):
    draft = "draft"
    published = "published"


Variables = list[VariableSpec]


def _unique(specs: Variables | None) -> Variables | None:
    if specs is not None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("a variable may be declared only once")
    return specs


class TemplateCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "movement_sms",
                    "channel": "sms",
                    "name": "Account movement SMS",
                    "variables": _VARIABLES,
                    "content": _SMS_CONTENT,
                }
            ]
        },
    )

    key: str = Field(pattern=TEMPLATE_KEY_PATTERN, examples=["movement_sms"])
    channel: Channel
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    variables: Variables = Field(
        default_factory=list,
        max_length=100,
        description="the variables templates may use, with their types; checked at send time",
    )
    content: TemplateIn | None = Field(default=None, description="the first draft (version 1)")

    _unique_variables = field_validator("variables")(_unique)

    @model_validator(mode="after")
    def _content_fits_channel(self) -> TemplateCreate:
        if self.content is not None:
            for _, problem in self.content.channel_problems(self.channel):
                raise ValueError(problem)
        return self


class VersionCreate(BaseModel):
    """A new draft: ``content`` (and ``variables``), or a copy of ``from_version`` with
    whatever of the two is given replaced."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"content": _SMS_CONTENT, "variables": _VARIABLES},
                {"from_version": 1},
            ]
        },
    )

    from_version: int | None = Field(default=None, ge=1, description="copy this version")
    variables: Variables | None = Field(
        default=None,
        max_length=100,
        description="default: those of from_version, else the template's declared variables",
    )
    content: TemplateIn | None = None

    _unique_variables = field_validator("variables")(_unique)

    @model_validator(mode="after")
    def _something_to_start_from(self) -> VersionCreate:
        if self.content is None and self.from_version is None:
            raise ValueError("give content, or from_version to start from a copy")
        return self


class VersionUpdate(BaseModel):
    """Replace a draft's content (and variables, when given)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"content": _SMS_CONTENT}]}
    )

    variables: Variables | None = Field(default=None, max_length=100)
    content: TemplateIn

    _unique_variables = field_validator("variables")(_unique)


class VersionOut(BaseModel):
    template_key: str
    version: int
    status: VersionStatus
    variables: Variables
    content: TemplateIn
    problems: list[FieldError] = Field(
        default_factory=list,
        description="drafts: what publishing would refuse (empty: ready to publish)",
    )
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


class TemplateOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "tpl_01JD3T6Q6F8X0M2N4P6R8S0T2V",
                    "key": "movement_sms",
                    "channel": "sms",
                    "name": "Account movement SMS",
                    "description": None,
                    "variables": _VARIABLES,
                    "current_version": 2,
                    "latest_version": 3,
                    "created_at": "2025-01-01T01:00:00Z",
                    "updated_at": "2025-01-02T01:00:00Z",
                }
            ]
        }
    )

    id: str
    key: str
    channel: Channel
    name: str
    description: str | None
    variables: Variables = Field(description="those of the current version, once published")
    current_version: int | None = Field(description="the newest published version")
    latest_version: int = Field(description="the newest version, draft or published (0: none)")
    created_at: datetime
    updated_at: datetime


class TemplateDetail(TemplateOut):
    current: VersionOut | None = Field(description="the current version, if any is published")


class TemplateList(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None = None


class VersionList(BaseModel):
    items: list[VersionOut]
    next_cursor: str | None = None


class PreviewDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    variables: Variables = Field(default_factory=list, max_length=100)
    content: TemplateIn

    _unique_variables = field_validator("variables")(_unique)


class PreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"key": "movement_sms", "version": 2, "variables": _SAMPLE},
                {
                    "draft": {"channel": "sms", "variables": _VARIABLES, "content": _SMS_CONTENT},
                    "variables": _SAMPLE,
                    "signature": "示例银行",
                },
            ]
        },
    )

    key: str | None = Field(default=None, pattern=TEMPLATE_KEY_PATTERN)
    version: int | None = Field(
        default=None, ge=1, description="default: the current version, else the newest draft"
    )
    draft: PreviewDraft | None = Field(default=None, description="an unsaved template instead")
    variables: dict[str, Any] = Field(
        default_factory=dict, description="sample values, checked against the declared types"
    )
    signature: str | None = Field(
        default=None,
        max_length=20,
        description="SMS signature the provider adds (e.g. 示例银行), counted as 【示例银行】",
    )
    timezone: str = Field(
        default=DEFAULT_TIMEZONE, max_length=64, description="the customer's time zone"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zone(value)
        except FilterError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PreviewRequest:
        if (self.key is None) == (self.draft is None):
            raise ValueError("give either key (and optionally version) or draft")
        if self.version is not None and self.key is None:
            raise ValueError("version goes with key")
        return self


class SmsLengthOut(BaseModel):
    text: str = Field(description="what the handset shows, signature included")
    encoding: str = Field(examples=["UCS-2"])
    characters: int = Field(description="septets (GSM-7) or UTF-16 code units (UCS-2)")
    segments: int
    per_segment: int


class PreviewOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "movement_sms",
                    "version": 2,
                    "channel": "sms",
                    "content": {
                        "body": "【示例银行】您尾号1234的账户于01月01日09:30支出¥1,200.00，"
                    },
                    "sms": {
                        "text": "【示例银行】您尾号1234的账户于01月01日09:30支出¥1,200.00，",
                        "encoding": "UCS-2",
                        "characters": 38,
                        "segments": 1,
                        "per_segment": 70,
                    },
                }
            ]
        }
    )

    key: str | None
    version: int | None
    channel: Channel
    content: dict[str, Any] = Field(description="rendered, as the channel's providers get it")
    sms: SmsLengthOut | None = Field(default=None, description="SMS only: length and segments")
