from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

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


class ProviderTemplate(BaseModel):
    """A pre-approved SMS template at a provider (Aliyun, Tencent), and its parameters."""

    model_config = ConfigDict(extra="forbid")

    template_code: str = Field(min_length=1, max_length=100, examples=["SMS_276450123"])
    params: dict[str, str] = Field(
        default_factory=dict,
        description="parameter name -> Jinja2 expression; Tencent takes them in this order",
        examples=[{"tail": "{{ account_tail }}", "amount": "{{ amount }}"}],
    )


class MiniProgram(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appid: str = Field(min_length=1, max_length=64)
    pagepath: str = Field(min_length=1, max_length=500)


class WeChatTemplate(BaseModel):
    """A WeChat Official Account template message: template id, fields and jump."""

    model_config = ConfigDict(extra="forbid")

    template_id: str = Field(min_length=1, max_length=128)
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="template field -> Jinja2 text",
        examples=[{"keyword1": "尾号{{ account_tail }}", "keyword2": "{{ amount }}元"}],
    )
    url: str | None = Field(default=None, max_length=2000, description="jump URL (Jinja2)")
    miniprogram: MiniProgram | None = None


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(default=None, max_length=1000, description="email only")
    body: str = Field(
        min_length=1,
        max_length=20_000,
        description="the text: SMS text for free-text gateways, email text part, WeChat fallback",
    )
    html: str | None = Field(default=None, max_length=200_000, description="email HTML part")
    provider_templates: dict[str, ProviderTemplate] = Field(
        default_factory=dict,
        description="SMS only: per provider account name or provider type (aliyun_sms, "
        "tencent_sms) the approved template code and parameters",
    )
    wechat: WeChatTemplate | None = Field(default=None, description="WeChat only")

    def options(self) -> dict[str, Any]:
        """The channel specifics, as stored on the Template row."""
        return self.model_dump(
            mode="json", include={"html", "provider_templates", "wechat"}, exclude_none=True
        )


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
        misplaced = {
            "html": Channel.email,
            "provider_templates": Channel.sms,
            "wechat": Channel.wechat,
        }
        for channel, tpl in self.templates.items():
            for part, owner in misplaced.items():
                if owner != channel and getattr(tpl, part):
                    raise ValueError(
                        f"{part} belongs in the {owner.value} template, not {channel.value}"
                    )
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
