"""Provider accounts, configured in the TOML file named by ``ICC_PROVIDERS_FILE``.

```toml
[[providers]]
name = "aliyun-main"        # unique
type = "aliyun_sms"         # plugin (entry point in the icc.channels group)
channel = "sms"
priority = 1                # lower is tried first; equal priorities share by weight
weight = 100
rate_per_second = 50
cost = "0.045"              # per message, CNY
endpoint = "https://dysmsapi.aliyuncs.com"
[providers.settings]
access_key_secret = "${ALIYUN_SMS_SECRET}"   # secrets come from the environment
```
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from channels.errors import ProviderConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class CircuitSettings(BaseModel):
    """Open the circuit when at least ``min_requests`` in ``window_seconds`` fail at
    ``error_rate`` or more; probe again after ``open_seconds``."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.5, gt=0, le=1)
    min_requests: int = Field(default=20, ge=1)
    window_seconds: float = Field(default=30.0, gt=0)
    open_seconds: float = Field(default=30.0, gt=0)


class ProviderAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    type: str
    channel: Literal["sms", "email", "wechat"]
    priority: int = 1
    weight: int = Field(default=100, ge=1)
    rate_per_second: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    cost: Decimal = Field(default=Decimal("0"), ge=0)
    endpoint: str | None = None
    circuit: CircuitSettings = CircuitSettings()
    settings: dict[str, Any] = Field(default_factory=dict)


class ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderAccount] = Field(default_factory=list)


def resolve_env(value: Any, *, where: str, env: dict[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` references with environment variables, recursively."""
    source = os.environ if env is None else env
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in source:
                raise ProviderConfigError(f"{where}: environment variable {name} is not set")
            return source[name]

        return _ENV_REF.sub(lookup, value)
    if isinstance(value, dict):
        return {k: resolve_env(v, where=f"{where}.{k}", env=env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, where=f"{where}[{i}]", env=env) for i, v in enumerate(value)]
    return value


def parse_accounts(
    text: str, *, source: str, env: dict[str, str] | None = None
) -> list[ProviderAccount]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProviderConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        parsed = ProvidersFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ProviderConfigError(f"{source}: {problems}") from None
    seen: set[str] = set()
    accounts = []
    for account in parsed.providers:
        if account.name in seen:
            raise ProviderConfigError(f"{source}: two providers are named {account.name!r}")
        seen.add(account.name)
        settings = resolve_env(
            account.settings, where=f"{source}: {account.name}.settings", env=env
        )
        endpoint = resolve_env(
            account.endpoint, where=f"{source}: {account.name}.endpoint", env=env
        )
        accounts.append(account.model_copy(update={"settings": settings, "endpoint": endpoint}))
    return accounts


def load_accounts(path: str | Path) -> list[ProviderAccount]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProviderConfigError(f"cannot read ICC_PROVIDERS_FILE {file}: {exc}") from None
    return parse_accounts(text, source=str(file))
