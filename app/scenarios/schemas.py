from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KEY_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class Channel(StrEnum):
    sms = "sms"
    email = "email"
    wechat = "wechat"


class MessageClass(StrEnum):
    transactional = "transactional"
    marketing = "marketing"


class VariableType(StrEnum):
    string = "string"
    integer = "integer"
    decimal = "decimal"
    number = "number"
    boolean = "boolean"
    datetime = "datetime"
    date = "date"


class VariableSpec(BaseModel):
    name: Annotated[str, Field(pattern=VARIABLE_PATTERN)]
    type: VariableType = VariableType.string
    description: str | None = None


class TemplateIn(BaseModel):
    subject: str | None = Field(default=None, max_length=1000, description="email only")
    body: str = Field(min_length=1, max_length=20_000)


class TemplateOut(TemplateIn):
    key: str


class ScenarioBase(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str | None = Field(default=None, max_length=200)
    message_class: MessageClass = Field(alias="class", examples=["transactional"])
    channels: list[Channel] = Field(min_length=1, description="the order channels are tried in")
    required_variables: list[VariableSpec | Annotated[str, Field(pattern=VARIABLE_PATTERN)]] = []
    templates: dict[Channel, TemplateIn]

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[Channel]) -> list[Channel]:
        if len(set(channels)) != len(channels):
            raise ValueError("a channel may appear only once")
        return channels

    @field_validator("required_variables")
    @classmethod
    def _normalize(cls, specs: list[VariableSpec | str]) -> list[VariableSpec | str]:
        out: list[VariableSpec | str] = [
            VariableSpec(name=s) if isinstance(s, str) else s for s in specs
        ]
        names = [s.name for s in out if isinstance(s, VariableSpec)]
        if len(set(names)) != len(names):
            raise ValueError("a variable may be declared only once")
        return out

    @model_validator(mode="after")
    def _templates_cover_channels(self) -> ScenarioBase:
        missing = [c.value for c in self.channels if c not in self.templates]
        if missing:
            raise ValueError(f"no template for channel(s) {', '.join(missing)}")
        extra = [c.value for c in self.templates if c not in self.channels]
        if extra:
            raise ValueError(f"template(s) for channel(s) not in the order: {', '.join(extra)}")
        if Channel.email in self.templates and not self.templates[Channel.email].subject:
            raise ValueError("the email template needs a subject")
        return self

    def variable_specs(self) -> list[VariableSpec]:
        return [
            s if isinstance(s, VariableSpec) else VariableSpec(name=s)
            for s in self.required_variables
        ]


class ScenarioCreate(ScenarioBase):
    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "key": "salary_credit",
                    "class": "transactional",
                    "channels": ["wechat", "sms"],
                    "required_variables": [
                        {"name": "account_tail", "type": "string"},
                        {"name": "amount", "type": "decimal"},
                    ],
                    "templates": {
                        "wechat": {"body": "您尾号{{ account_tail }}的账户收到工资{{ amount }}元"},
                        "sms": {"body": "【示例银行】尾号{{ account_tail }}收到工资{{ amount }}元"},
                    },
                }
            ]
        },
    )

    key: str = Field(pattern=KEY_PATTERN, examples=["account_movement"])


class ScenarioUpdate(ScenarioBase):
    pass


class ScenarioOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    key: str
    name: str
    message_class: MessageClass = Field(alias="class")
    channels: list[Channel]
    required_variables: list[VariableSpec]
    templates: dict[Channel, TemplateOut]
    created_at: datetime
    updated_at: datetime


class ScenarioList(BaseModel):
    items: list[ScenarioOut]
    next_cursor: str | None = None
