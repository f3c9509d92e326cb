from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

KEY_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
TEMPLATE_KEY_PATTERN = r"^[a-z][a-z0-9_.-]{1,99}$"


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
        """The channel specifics, as stored on a template version."""
        return self.model_dump(
            mode="json", include={"html", "provider_templates", "wechat"}, exclude_none=True
        )

    def channel_problems(self, channel: Channel) -> list[tuple[str, str]]:
        """(part, problem) for parts that do not belong to ``channel``'s template, and an
        email template without a subject."""
        problems = []
        if channel == Channel.email and not self.subject:
            problems.append(("subject", "the email template needs a subject"))
        owners = {
            "html": Channel.email,
            "provider_templates": Channel.sms,
            "wechat": Channel.wechat,
        }
        for part, owner in owners.items():
            if owner != channel and getattr(self, part):
                problems.append(
                    (part, f"{part} belongs in the {owner.value} template, not {channel.value}")
                )
        return problems


class TemplateRef(BaseModel):
    """A template managed under /v1/templates (``{"key": "movement_sms"}``, or just the key
    as a string); the scenario sends its current published version."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=TEMPLATE_KEY_PATTERN, examples=["movement_sms"])


def _template_kind(value: Any) -> str:
    if isinstance(value, str | TemplateRef):
        return "ref"
    if isinstance(value, dict) and "key" in value:
        return "ref"
    return "inline"


def _ref_from_key(value: Any) -> Any:
    return {"key": value} if isinstance(value, str) else value


# A template key ("movement_sms"), {"key": ...}, or an inline template (kept for older
# clients: it becomes a published version of the template "<scenario>.<channel>").
TemplateChoice = Annotated[
    Annotated[TemplateRef, Tag("ref")] | Annotated[TemplateIn, Tag("inline")],
    Discriminator(_template_kind),
]


class ScenarioTemplateOut(TemplateIn):
    """The template a channel sends: its key, current version and that version's content."""

    key: str
    version: int | None = None


class ScenarioBase(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str | None = Field(default=None, max_length=200)
    message_class: MessageClass = Field(alias="class", examples=["transactional"])
    channels: list[Channel] = Field(min_length=1, description="the order channels are tried in")
    required_variables: list[VariableSpec | Annotated[str, Field(pattern=VARIABLE_PATTERN)]] = []
    templates: dict[Channel, TemplateChoice] = Field(
        description="per channel: a template key (its current published version is sent), "
        "or an inline template (it becomes the template <scenario key>.<channel>)",
    )

    @field_validator("templates", mode="before")
    @classmethod
    def _keys_as_refs(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {channel: _ref_from_key(tpl) for channel, tpl in value.items()}
        return value

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
        for channel, tpl in self.templates.items():
            if isinstance(tpl, TemplateIn):
                for _, problem in tpl.channel_problems(channel):
                    raise ValueError(problem)
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
                        "sms": {"key": "salary_sms"},
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
    templates: dict[Channel, ScenarioTemplateOut]
    created_at: datetime
    updated_at: datetime


class ScenarioList(BaseModel):
    items: list[ScenarioOut]
    next_cursor: str | None = None
