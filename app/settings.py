"""One Settings object for the whole platform (prefix ``ICC_``, nested groups with ``__``)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


def async_database_url(url: str) -> str:
    """Accept the usual URL spellings and pick the async driver for them."""
    for plain, driver in (
        ("sqlite:", "sqlite+aiosqlite:"),
        ("postgresql:", "postgresql+asyncpg:"),
        ("postgres:", "postgresql+asyncpg:"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def _in_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


class QueueSettings(BaseModel):
    """How messages move from the outbox to the channel plugins."""

    name: str = "icc:messages"
    workers: int = Field(
        default=16, ge=1, description="jobs processed at once per process (consumer tasks)"
    )
    concurrency: int = Field(default=32, ge=1, description="messages sent at once per worker")
    chunk_size: int = Field(default=200, ge=1, le=5000, description="message ids per queued job")
    lease_seconds: float = Field(default=60.0, gt=0)
    sweep_interval: float = Field(default=2.0, gt=0)
    redelivery_grace: float = Field(default=30.0, gt=0, description="re-enqueue after this long")
    early_receipt_ttl: float = Field(
        default=86_400.0,
        gt=0,
        description="seconds a receipt that came before its send was recorded waits for it",
    )


class RetrySettings(BaseModel):
    """Exponential backoff with full jitter for transient channel errors."""

    max_attempts: int = Field(default=5, ge=1, description="attempts per channel")
    base_delay: float = Field(default=1.0, gt=0)
    max_delay: float = Field(default=300.0, gt=0)


class MarketingSettings(BaseModel):
    """How marketing patches travel with transactional messages."""

    quiet_hours_start: str = Field(
        default="21:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="customer's time"
    )
    quiet_hours_end: str = Field(default="08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    sms_max_segments: int = Field(default=2, ge=1, le=10, description="SMS budget with a patch")
    opt_out_hint: str = Field(default="拒收请回复R", max_length=40)
    sms_signature: str | None = Field(
        default=None, max_length=20, description="counted in the SMS length, e.g. 示例银行"
    )


class ApiSettings(BaseModel):
    max_body_bytes: int = 256 * 1024
    max_batch_body_bytes: int = 32 * 1024 * 1024
    max_batch_items: int = 10_000
    max_import_bytes: int = Field(
        default=2 * 1024**3, description="largest CSV body of POST /v1/customers/import"
    )
    key_cache_seconds: float = 10.0
    idempotency_days: float = Field(
        default=7.0, gt=0, description="how long creating POSTs remember an Idempotency-Key"
    )


class CustomerSettings(BaseModel):
    """Customer profiles: consent defaults and the bulk import."""

    marketing_consent_default: Literal["granted", "denied"] = Field(
        default="granted",
        description="marketing consent of a customer who neither opted in nor out",
    )
    import_chunk_rows: int = Field(
        default=2000, ge=1, le=50_000, description="rows per upsert (and per transaction)"
    )
    import_max_errors: int = Field(
        default=100, ge=0, description="row errors listed in an import summary (all are counted)"
    )

    @property
    def marketing_granted(self) -> bool:
        return self.marketing_consent_default == "granted"


class TrackingSettings(BaseModel):
    """Tracked short links and open pixels in marketing content (app/tracking)."""

    enabled: bool = Field(
        default=True, description="rewrite the links of marketing content into tracked links"
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="where customers reach /t/{token} and /o/{token}; no trailing query",
    )
    allowed_domains: list[str] = Field(
        default_factory=list,
        description=(
            "domains (with their subdomains) whose links are tracked besides the hosts the"
            " templates write out; a link to another host, which came in through a variable,"
            " stays as it is"
        ),
    )

    @field_validator("allowed_domains")
    @classmethod
    def _bare_domains(cls, domains: list[str]) -> list[str]:
        cleaned = [d.strip().strip(".").lower() for d in domains]
        for domain in cleaned:
            if not re.fullmatch(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?", domain):
                raise ValueError(f"{domain!r} is not a domain name (no scheme, port or path)")
        return cleaned

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")


class ExperimentSettings(BaseModel):
    """A/B experiments."""

    evaluate_seconds: float = Field(
        default=60.0, gt=0, description="seconds between auto-winner evaluations"
    )


class CampaignSettings(BaseModel):
    """How campaigns walk their audience (app/campaigns/runner.py)."""

    chunk_size: int = Field(
        default=500, ge=1, le=5000, description="customers per chunk (and per transaction)"
    )
    tick_seconds: float = Field(default=1.0, gt=0, description="how often due campaigns are run")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ICC_", env_nested_delimiter="__", extra="ignore", env_file=None
    )

    database_url: str = "sqlite+aiosqlite:///./var/icc.db"
    redis_url: str | None = None
    providers_file: str | None = Field(
        default=None, description="TOML file of provider accounts; unset: sandbox providers"
    )
    bootstrap_admin_key: SecretStr | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    queue: QueueSettings = QueueSettings()
    retry: RetrySettings = RetrySettings()
    api: ApiSettings = ApiSettings()
    marketing: MarketingSettings = MarketingSettings()
    customers: CustomerSettings = CustomerSettings()
    tracking: TrackingSettings = TrackingSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    campaigns: CampaignSettings = CampaignSettings()

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        url = async_database_url(url)
        if url.startswith("sqlite") and _in_memory(url):
            raise ValueError(
                "an in-memory SQLite database is one per connection: the writer, the readers "
                "and the migrations would each see their own. Give a file path, e.g. "
                "sqlite:///./var/icc.db"
            )
        return url

    @field_validator("redis_url", "providers_file")
    @classmethod
    def _empty_is_unset(cls, url: str | None) -> str | None:
        return url or None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
