"""SMS channel adapters: Alibaba Cloud (``aliyun``), Tencent Cloud (``tencent``) and a bank's
in-house HTTP gateway (``http_gateway``).

This module holds what they share: the settings reader (clear ProviderConfigError messages),
the lazily created HTTP client, the provider-template lookup, the callback token check and the
mapping of transport failures to transient errors.

Content an SMS adapter receives::

    {"body": "<rendered free text>",
     "provider_templates": {"<account or type name>": {"template_code": "SMS_123",
                                                        "params": {"name": "value"}}}}

Aliyun and Tencent send only pre-approved templates, looked up by the provider account name
first, then by the provider type name; the HTTP gateway sends ``body``.
"""

from __future__ import annotations

import hmac
import logging
from abc import abstractmethod
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import httpx
import orjson

from app.masking import mask_phone
from channels.base import ChannelProvider, ProviderContext, SendResult
from channels.errors import (
    CallbackAuthError,
    CallbackRejected,
    ChannelError,
    PermanentChannelError,
    ProviderConfigError,
    ProviderFault,
    TransientChannelError,
)
from channels.http import HttpClient, HttpRequest, HttpResponse

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
MAX_CALLBACK_BYTES = 1024 * 1024
MIN_CALLBACK_TOKEN = 16


class CredentialsRejected(ProviderFault):
    """The provider refused our credentials or signature. Permanent for this account (the
    same request can never pass), and about the account rather than the recipient: a router
    may prefer another account of the channel before falling back to the next channel."""


class SmsSettings:
    """Typed access to a provider's settings; every problem names the setting."""

    def __init__(self, type_name: str, account: str, raw: Mapping[str, Any]) -> None:
        self._where = f"{type_name} provider {account!r}"
        self._raw = raw

    def error(self, name: str, problem: str) -> ProviderConfigError:
        return ProviderConfigError(f"{self._where}: setting {name!r} {problem}")

    def text(self, name: str, default: str | None = None) -> str:
        value = self._raw.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, "is required and must be a non-empty string")
        return value.strip()

    def optional_text(self, name: str) -> str | None:
        value = self._raw.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error(name, "must be a string")
        return value.strip() or None

    def number(self, name: str, default: float) -> float:
        value = self._raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(name, "must be a positive number")
        return float(value)

    def integer(self, name: str, default: int) -> int:
        value = self._raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(name, "must be a positive integer")
        return value

    def url(self, name: str, default: str | None = None) -> str:
        value = self.text(name, default)
        try:
            parsed = httpx.URL(value)
        except httpx.InvalidURL:
            raise self.error(name, f"is not a valid URL (got {value!r})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise self.error(name, f"must be an http:// or https:// URL (got {value!r})")
        return value.rstrip("/")

    def callback_token(self) -> str | None:
        token = self.optional_text("callback_token")
        if token is not None and len(token) < MIN_CALLBACK_TOKEN:
            raise self.error("callback_token", f"must be at least {MIN_CALLBACK_TOKEN} characters")
        return token


class SmsProvider(ChannelProvider):
    """Base of the SMS adapters: settings reader, one shared HTTP client (made on first use,
    closed by ``close``), the template lookup and the callback token check."""

    channels = ("sms",)
    # Carriers cap a concatenated SMS at about 500 characters (Aliyun and Tencent both).
    max_length = 500

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        self.config = SmsSettings(self.type_name, account, self.settings)
        self.timeout = self.send_timeout = self.config.number("timeout", 10.0)
        self.max_connections = self.config.integer("max_connections", 100)
        self._client: HttpClient | None = None

    @property
    def http(self) -> HttpClient:
        if self._client is None:
            self._client = HttpClient(timeout=self.timeout, max_connections=self.max_connections)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def send(
        self,
        *,
        to: str,
        content: Mapping[str, Any],
        idempotency_key: str,
        message_id: str,
    ) -> SendResult:
        request = self.build_request(to=to, content=content, message_id=message_id)
        response = await self.exchange(request)
        try:
            return self.read_outcome(response, message_id)
        except ChannelError as exc:
            logging.getLogger(f"icc.channels.{self.type_name}").info(
                f"{self.type_name} rejected",
                extra={"provider": self.account, "code": exc.code, "to": mask_phone(to)},
            )
            raise

    @abstractmethod
    def build_request(self, *, to: str, content: Mapping[str, Any], message_id: str) -> HttpRequest:
        """The provider's request for one message (signed, where the provider signs)."""

    @abstractmethod
    def read_outcome(self, response: HttpResponse, message_id: str) -> SendResult:
        """The provider's answer as a result, or the ChannelError it means."""

    def template_for(self, content: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
        """The pre-approved template of this account (or of this provider type)."""
        return provider_template(content, account=self.account, type_name=self.type_name)

    async def exchange(self, request: HttpRequest) -> HttpResponse:
        """Send, mapping timeouts and network failures to transient errors."""
        try:
            return await self.http.send(request)
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise TransientChannelError(
                f"{self.type_name}: no answer within {self.timeout:g}s", code="timeout"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientChannelError(
                f"{self.type_name}: unreachable ({type(exc).__name__})", code="network"
            ) from exc


def provider_template(
    content: Mapping[str, Any], *, account: str, type_name: str
) -> tuple[str, dict[str, str]]:
    templates = content.get("provider_templates")
    entry = None
    if isinstance(templates, Mapping):
        entry = templates.get(account) or templates.get(type_name)
    code = entry.get("template_code") if isinstance(entry, Mapping) else None
    if not isinstance(code, str) or not code.strip():
        raise ProviderFault(
            f"no pre-approved template for {account!r} or {type_name!r} in the content",
            code="no_template",
        )
    assert isinstance(entry, Mapping)
    params = entry.get("params") or {}
    if not isinstance(params, Mapping):
        raise PermanentChannelError("template params must map name → value", code="bad_content")
    return code.strip(), {str(k): "" if v is None else str(v) for k, v in params.items()}


def check_callback_token(expected: str | None, query: Mapping[str, str]) -> None:
    """The providers do not sign their SMS pushes: a shared secret in the URL stands in."""
    if expected is None:
        raise CallbackAuthError("no callback_token is configured for this provider")
    given = query.get("token", "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CallbackAuthError("missing or wrong token in the callback URL")


def callback_json(body: bytes) -> Any:
    if len(body) > MAX_CALLBACK_BYTES:
        raise CallbackRejected(f"body larger than {MAX_CALLBACK_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CallbackRejected(f"body is not JSON ({exc})") from None


def callback_items(body: bytes) -> list[Mapping[str, Any]]:
    """The pushed records: a JSON array of objects (a lone object counts as one)."""
    data = callback_json(body)
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, Mapping) for item in items):
        raise CallbackRejected("expected a JSON object or a non-empty array of objects")
    return items


def field(item: Mapping[str, Any], name: str) -> str:
    """A required string-ish field of a pushed record."""
    value = item.get(name)
    if value is None or isinstance(value, Mapping | list) or str(value) == "":
        raise CallbackRejected(f"record without {name!r}")
    return str(value)


def optional_field(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None or str(value) == "" else str(value)


def china_time(value: str | None) -> datetime | None:
    """``2017-01-01 00:00:00`` as the providers write it: Beijing time."""
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TZ)
    except ValueError:
        raise CallbackRejected(f"time {value!r} is not YYYY-MM-DD HH:MM:SS") from None


def json_body(value: Any) -> bytes:
    return orjson.dumps(value)
