"""WeChat Official Account template messages (``wechat_template``), and the events WeChat
pushes back to our callback URL.

Send: ``POST {endpoint}/cgi-bin/message/template/send?access_token=...`` with ``touser``
(openid), ``template_id``, ``url`` or ``miniprogram``, ``data`` and ``client_msg_id`` (our
idempotency key: WeChat sends one message per openid + client_msg_id within 10 minutes).

access_token: fetched with ``GET /cgi-bin/token`` (token_mode ``client_credential``) or
``POST /cgi-bin/stable_token`` (``stable_token``, the default: WeChat recommends it, and other
systems of the bank fetching tokens for the same account do not invalidate ours). It is shared
by every worker through Redis when the platform has one, else kept in this process; on a
rejected token (40001, 40014, 42001) it is refreshed and the send retried exactly once.

errcodes are classified by the tables below (meanings from WeChat's global return codes; the
errcode is kept as the error's ``code``): transient ones are retried, permanent ones make the
scenario fall back to its next channel (e.g. SMS). Unknown codes are permanent: retrying
cannot be known to help, and the next channel still reaches the customer. Network errors,
timeouts, HTTP 5xx and non-JSON answers are transient; so is a token rejected again right after
a refresh (another worker may have force-refreshed in between).

Callbacks (``handle_callback``): a signed GET with ``echostr`` is WeChat's URL check and is
answered with the echostr; a signed POST carries XML, read by ``channels.wechat_events``
(plaintext mode only; the encrypted AES mode is out of scope). A signature older or newer than
5 minutes is refused, and so is a signed query that came before with another body.

Settings: ``app_id``, ``app_secret``, ``callback_token`` (the Token set in the WeChat console),
``endpoint`` (default https://api.weixin.qq.com), ``token_mode`` (``stable_token`` or
``client_credential``), ``miniprogram_appid`` (for content whose miniprogram has no appid),
``timeout`` (seconds, default 10).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx
import orjson

from app.masking import mask_openid, redact_secrets
from channels.base import (
    CallbackRequest,
    CallbackResult,
    ChannelProvider,
    ProviderContext,
    SendResult,
)
from channels.errors import (
    CallbackRejected,
    PermanentChannelError,
    ProviderConfigError,
    ProviderFault,
    TransientChannelError,
)
from channels.http import make_http_client
from channels.wechat_events import read_push, verify_signature
from channels.wechat_pushes import PushLedger
from channels.wechat_token import AccessToken, AccessTokenCache

log = logging.getLogger("icc.channels.wechat")

DEFAULT_ENDPOINT = "https://api.weixin.qq.com"
TOKEN_MODES = ("client_credential", "stable_token")
# access_token invalid (40001; at /cgi-bin/token: AppSecret wrong), not this account's (40014),
# expired (42001): refresh and retry once.
TOKEN_REJECTED = frozenset({40001, 40014, 42001})
# Retried with backoff; 45009 is a daily quota, so once the retries are spent the scenario
# falls back all the same. 45047 belongs to customer-service messages: a quota too, if seen.
TRANSIENT_ERRCODES = {
    -1: "system busy",
    45009: "daily API call quota reached",
    45011: "API called too frequently",
    45047: "customer-service message quota reached",
}
PERMANENT_ERRCODES = {
    40003: "invalid openid",
    43004: "the recipient does not follow the account",
    43019: "the recipient is in the account's blacklist",
    43101: "the user refused messages",
    48002: "the user turned off messages from this account",
    40037: "invalid template_id",
    47001: "the body could not be parsed",
    47003: "template argument invalid",
    43116: "template restricted for abuse",
    40013: "invalid AppID",
    40125: "invalid AppSecret",
    40164: "caller IP not whitelisted",
    48001: "API not authorised for this account",
}
MAX_CLIENT_MSG_ID = 64

# httpx logs every request URL at INFO, and WeChat wants the access_token (and, for
# /cgi-bin/token, the AppSecret) in the query string: blank them before any handler sees them.


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def _without_secrets(exc: BaseException) -> str:
    return redact_secrets(f"{type(exc).__name__}: {exc}")


def _install_redaction() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactSecrets) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactSecrets())


_install_redaction()


class WeChatTemplateProvider(ChannelProvider):
    """WeChat Official Account template messages; see the module docstring for settings,
    token handling, errcode classification and callbacks."""

    type_name = "wechat_template"
    channels = ("wechat",)

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        self.app_id = self._text("app_id")
        self._secret = self._text("app_secret")
        self._callback_token = self._text("callback_token")
        self.endpoint = self._endpoint()
        self.token_mode = self._text("token_mode", default="stable_token")
        if self.token_mode not in TOKEN_MODES:
            raise self._config_error("token_mode", f"must be one of {', '.join(TOKEN_MODES)}")
        self.miniprogram_appid = self._text("miniprogram_appid", default="") or None
        self.send_timeout = self._timeout()
        self._http = make_http_client(timeout=self.send_timeout, base_url=self.endpoint)
        self._tokens = AccessTokenCache(
            self._fetch_token, app_id=self.app_id, redis_url=context.redis_url
        )
        self._pushes = PushLedger(app_id=self.app_id, redis_url=context.redis_url)

    # -- settings ---------------------------------------------------------------------------

    def _config_error(self, name: str, problem: str) -> ProviderConfigError:
        return ProviderConfigError(f"wechat provider {self.account!r}: setting {name!r} {problem}")

    def _text(self, name: str, *, default: str | None = None) -> str:
        value = self.settings.get(name, default)
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise self._config_error(name, "is required and must be a non-empty string")
        return value.strip()

    def _endpoint(self) -> str:
        endpoint = self._text("endpoint", default=DEFAULT_ENDPOINT) or DEFAULT_ENDPOINT
        if not endpoint.startswith(("http://", "https://")):
            raise self._config_error("endpoint", "must be an http:// or https:// URL")
        return endpoint.rstrip("/")

    def _timeout(self) -> float:
        timeout = self.settings.get("timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise self._config_error("timeout", "must be a positive number of seconds")
        return float(timeout)

    # -- send -------------------------------------------------------------------------------

    async def send(
        self,
        *,
        to: str,
        content: Mapping[str, Any],
        idempotency_key: str,
        message_id: str,
    ) -> SendResult:
        body = orjson.dumps(self._template_body(to, content, idempotency_key))
        token = await self._tokens.get()
        result = await self._post_template(token, body)
        if _errcode(result) in TOKEN_REJECTED:
            token = await self._tokens.refresh(rejected=token)
            result = await self._post_template(token, body)
        errcode = _errcode(result)
        if errcode == 0:
            return SendResult(provider_message_id=str(result.get("msgid", "")))
        if errcode in TOKEN_REJECTED:
            raise TransientChannelError(
                f"WeChat rejected a freshly refreshed access_token ({_errmsg(result)})",
                code=str(errcode),
            )
        error = _send_error(errcode, result)
        log.info(
            "wechat send rejected",
            extra={"provider": self.account, "errcode": errcode, "to": mask_openid(to)},
        )
        raise error

    def _template_body(
        self, to: str, content: Mapping[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        template_id = content.get("template_id")
        if not isinstance(template_id, str) or not template_id.strip():
            raise ProviderFault("no WeChat template_id in the rendered content", code="no_template")
        body: dict[str, Any] = {
            "touser": to,
            "template_id": template_id.strip(),
            "data": _template_data(content.get("data")),
            "client_msg_id": _client_msg_id(idempotency_key),
        }
        url = content.get("url")
        if isinstance(url, str) and url:
            body["url"] = url
        miniprogram = self._miniprogram(content.get("miniprogram"))
        if miniprogram is not None:
            body["miniprogram"] = miniprogram
        return body

    def _miniprogram(self, value: Any) -> dict[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping) or not value.get("pagepath"):
            raise PermanentChannelError("miniprogram needs a pagepath", code="bad_content")
        appid = value.get("appid") or self.miniprogram_appid
        if not appid:
            raise PermanentChannelError(
                "miniprogram needs an appid (content or the miniprogram_appid setting)",
                code="bad_content",
            )
        return {"appid": str(appid), "pagepath": str(value["pagepath"])}

    async def _post_template(self, token: str, body: bytes) -> dict[str, Any]:
        return await self._call(
            "POST",
            "/cgi-bin/message/template/send",
            params={"access_token": token},
            content=body,
        )

    # -- access_token -----------------------------------------------------------------------

    async def _fetch_token(self, rejected: str | None) -> AccessToken:
        if self.token_mode == "client_credential":
            return await self._request_token(
                "GET",
                "/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": self.app_id},
            )
        token = await self._stable_token(force_refresh=False)
        if rejected is not None and token.value == rejected:
            # Normal mode hands back the same token while WeChat thinks it valid; the send
            # says otherwise, so force a new one (limited per day, hence only here).
            token = await self._stable_token(force_refresh=True)
        return token

    async def _stable_token(self, *, force_refresh: bool) -> AccessToken:
        payload = {
            "grant_type": "client_credential",
            "appid": self.app_id,
            "secret": self._secret,
            "force_refresh": force_refresh,
        }
        return await self._request_token(
            "POST", "/cgi-bin/stable_token", content=orjson.dumps(payload)
        )

    async def _request_token(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> AccessToken:
        if params is not None:
            params = {**params, "secret": self._secret}
        result = await self._call(method, path, params=params, content=content)
        errcode = _errcode(result)
        token = result.get("access_token")
        if errcode != 0 or not isinstance(token, str) or not token:
            raise _send_error(errcode, result, what="fetching the access_token")
        expires_in = result.get("expires_in", 7200)
        return AccessToken.expiring(token, expires_in if isinstance(expires_in, int) else 7200)

    # -- HTTP -------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise TransientChannelError("WeChat API timed out", code="timeout") from exc
        except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
            # The aiohttp transport passes some of aiohttp's errors through unmapped (an
            # answer that is not HTTP, an oversized header), and their text holds the URL
            # with the AppSecret or access_token: every one becomes a redacted channel error.
            raise TransientChannelError(
                f"WeChat API unreachable ({_without_secrets(exc)})", code="network"
            ) from exc
        return _json_answer(response)

    # -- callbacks --------------------------------------------------------------------------

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        """Check WeChat's signature and its age, then answer the URL check or read the pushed
        XML, unless its signed query came before with another body."""
        verify_signature(self._callback_token, request.query)
        if request.method.upper() == "GET":
            echostr = request.query.get("echostr")
            if not echostr:
                raise CallbackRejected("a GET from WeChat carries echostr (URL verification)")
            return CallbackResult(response_body=echostr.encode(), media_type="text/plain")
        query = request.query
        await self._pushes.check(query["timestamp"], query["nonce"], request.body)
        return read_push(request.body)

    async def close(self) -> None:
        await self._tokens.close()
        await self._pushes.close()
        await self._http.aclose()


def _errcode(result: Mapping[str, Any]) -> int:
    try:
        return int(result.get("errcode", 0))
    except (TypeError, ValueError):
        return -1


def _errmsg(result: Mapping[str, Any]) -> str:
    return str(result.get("errmsg", ""))[:200]


def _send_error(
    errcode: int, result: Mapping[str, Any], *, what: str = "sending"
) -> TransientChannelError | PermanentChannelError:
    if errcode in TRANSIENT_ERRCODES:
        detail = f"WeChat {what}: {TRANSIENT_ERRCODES[errcode]} ({_errmsg(result)})"
        return TransientChannelError(detail, code=str(errcode))
    meaning = PERMANENT_ERRCODES.get(errcode, "rejected")
    # Unknown codes are permanent: retrying cannot be known to help, the next channel can.
    detail = f"WeChat {what}: {meaning} ({_errmsg(result) or 'no access_token'})"
    return PermanentChannelError(detail, code=str(errcode))


def _json_answer(response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    if status >= 500 or status == 429:
        raise TransientChannelError(f"WeChat API answered HTTP {status}", code=f"http_{status}")
    if status >= 400:
        raise PermanentChannelError(f"WeChat API answered HTTP {status}", code=f"http_{status}")
    try:
        result = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise TransientChannelError("WeChat API answered non-JSON", code="bad_answer") from exc
    if not isinstance(result, dict):
        raise TransientChannelError("WeChat API answered non-object JSON", code="bad_answer")
    return result


def _template_data(data: Any) -> dict[str, dict[str, str]]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PermanentChannelError("template data must map field → value", code="bad_content")
    fields: dict[str, dict[str, str]] = {}
    for name, value in data.items():
        if isinstance(value, Mapping):  # already {"value": ..., "color": ...}
            fields[str(name)] = {str(k): str(v) for k, v in value.items()}
        else:
            fields[str(name)] = {"value": str(value)}
    return fields


def _client_msg_id(idempotency_key: str) -> str:
    # Stable for the same key, and within WeChat's length limit.
    if len(idempotency_key.encode()) <= MAX_CLIENT_MSG_ID:
        return idempotency_key
    return hashlib.sha256(idempotency_key.encode()).hexdigest()
