"""A fake Alibaba Cloud SMS API (dysmsapi ``SendSms``, 2017-05-25) for tests, the demo and
benchmarks.

It authenticates like the real gateway, from the raw request: the ACS3-HMAC-SHA256
``Authorization`` (V3 signature: canonical request of method, path, canonical query, the
signed headers as received, the body's SHA-256), the ``x-acs-content-sha256`` of the body, the
15-minute clock window and single-use nonces, and answers Alibaba Cloud's own errors
(``IncompleteSignature``, ``InvalidAccessKeyId.NotFound``, ``SignatureDoesNotMatch`` with the
server's string to sign, ``InvalidTimeStamp.Expired``, ``SignatureNonceUsed``). Then it checks
the ``SendSms`` parameters (``MissingPhoneNumbers``..., ``isv.MOBILE_NUMBER_ILLEGAL``,
``isv.INVALID_JSON_PARAM``, and optionally known signatures and templates), records what it
accepts in ``sends`` and, when a ``callback_url`` is set, pushes SmsReport receipts to it after
``callback_delay`` seconds. ``push_reply`` pushes an SmsUp reply.

Mount it with ``AliyunSmsSimulator(...).add_routes(app)`` (``POST /aliyun/``) and point an
``aliyun_sms`` provider's ``endpoint`` at ``http://host:port/aliyun``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote_plus

import orjson
from aiohttp import web

from channels.simulator.faults import CallbackPusher, Faults

CHINA = timedelta(hours=8)
MAX_SKEW = timedelta(minutes=15)
_AUTH = re.compile(
    r"^ACS3-HMAC-SHA256 Credential=(?P<id>[^,\s]+),SignedHeaders=(?P<names>[^,\s]+),"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_PHONE = re.compile(r"^(?:\+86|0086|86)?1[3-9]\d{9}$")
REQUIRED = ("PhoneNumbers", "SignName", "TemplateCode")
RANDOM_ERRORS = ("isv.BUSINESS_LIMIT_CONTROL", "Throttling.User", "ServiceUnavailable")

# code → (HTTP status, Message) as the gateway and dysmsapi answer them; unknown codes are
# answered HTTP 200 (dysmsapi's business errors).
ERRORS: dict[str, tuple[int, str]] = {
    "IncompleteSignature": (400, "The request signature does not conform to Aliyun standards."),
    "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
    "SignatureDoesNotMatch": (400, "Specified signature does not match our calculation."),
    "InvalidTimeStamp.Expired": (400, "Specified time stamp or date value is expired."),
    "SignatureNonceUsed": (400, "Specified signature nonce was used already."),
    "InvalidApi.NotFound": (404, "Specified api is not found, please check your url and method."),
    "Throttling.User": (400, "Request was denied due to user flow control."),
    "ServiceUnavailable": (503, "The request has failed due to a temporary failure of the server."),
    "InternalError": (500, "The request processing has failed due to some unknown error."),
    "isv.BUSINESS_LIMIT_CONTROL": (200, "触发分钟级流控Permits:1"),
    "isv.MOBILE_NUMBER_ILLEGAL": (200, "非法手机号"),
    "isv.INVALID_JSON_PARAM": (200, "JSON参数不合法，只接受字符串值"),
    "isv.SMS_SIGNATURE_ILLEGAL": (200, "该账号下找不到对应签名"),
    "isv.SMS_TEMPLATE_ILLEGAL": (200, "该账号下找不到对应模板"),
    "isv.AMOUNT_NOT_ENOUGH": (200, "账户余额不足"),
    "isv.BLACK_KEY_CONTROL_LIMIT": (200, "变量中传入疑似违规信息"),
}


@dataclass(frozen=True)
class AliyunSend:
    """One accepted ``SendSms``."""

    phone_numbers: list[str]
    sign_name: str
    template_code: str
    template_param: dict[str, Any]
    out_id: str | None
    biz_id: str
    host: str  # the Host header, as signed
    signed_headers: list[str]
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Rejected(Exception):
    """Answer the request with this provider error code."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def percent_encode(value: str) -> str:
    return quote(value, safe="~")


class AliyunSmsSimulator:
    """Fake dysmsapi ``SendSms``; see the module docstring."""

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int | None = None,
        callback_url: str | None = None,
        callback_delay: float = 0.0,
        report_fail_rate: float = 0.0,
        sign_names: Iterable[str] | None = None,
        template_codes: Iterable[str] | None = None,
    ) -> None:
        self.credentials = dict(credentials or {"test-access-key-id": "test-access-key-secret"})
        self.faults = Faults(latency=latency, error_rate=error_rate, seed=seed)
        self.pusher = CallbackPusher(url=callback_url, delay=callback_delay)
        self.report_fail_rate = report_fail_rate
        self.sign_names = set(sign_names) if sign_names is not None else None
        self.template_codes = set(template_codes) if template_codes is not None else None
        self.sends: list[AliyunSend] = []
        self.rejections: list[tuple[str, str]] = []  # (code, message), for debugging tests
        # Nonces are remembered for the clock window only: older requests fail on their date.
        self._nonces: set[str] = set()
        self._nonce_times: deque[tuple[datetime, str]] = deque()

    def add_routes(self, app: web.Application, *, prefix: str = "/aliyun") -> None:
        app.router.add_post(f"{prefix}/", self.handle)
        if prefix:
            app.router.add_post(prefix, self.handle)
        app.on_cleanup.append(self._cleanup)

    def force(self, code: str, count: int = 1) -> None:
        """The next ``count`` authenticated requests answer ``code``."""
        self.faults.force(code, count)

    async def handle(self, request: web.Request) -> web.Response:
        await self.faults.delay()
        body = await request.read()
        try:
            query, signed = self._authenticate(request, body)
            send = self._send(request, query, signed)
        except Rejected as exc:
            return self._error(exc)
        self.sends.append(send)
        self._schedule_reports(send)
        return _json(
            200,
            {"Code": "OK", "Message": "OK", "BizId": send.biz_id, "RequestId": _request_id()},
        )

    async def push_reply(self, phone_number: str, content: str, *, sign_name: str = "") -> None:
        """Push an SmsUp record (a customer's reply) to the callback URL now."""
        record = {
            "phone_number": phone_number,
            "send_time": _china_now(),
            "content": content,
            "sign_name": sign_name,
            "dest_code": "1234",
            "sequence_id": int(self.faults.digits(9)),
        }
        self.pusher.push([record])
        await self.pusher.wait()

    # -- authentication ---------------------------------------------------------------------

    def _authenticate(self, request: web.Request, body: bytes) -> tuple[dict[str, str], list[str]]:
        """The decoded query and the signed header names of an authentic request."""
        match = _AUTH.match(request.headers.get("Authorization", ""))
        if match is None:
            raise Rejected("IncompleteSignature")
        secret = self.credentials.get(match["id"])
        if secret is None:
            raise Rejected("InvalidAccessKeyId.NotFound")
        names = match["names"].split(";")
        _check_signed_headers(request, names, body)
        query = _parse_query(request.raw_path.partition("?")[2])
        expected = hashlib.sha256(_canonical_request(request, names, query).encode()).hexdigest()
        string_to_sign = f"ACS3-HMAC-SHA256\n{expected}"
        signature = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, match["signature"]):
            message = ERRORS["SignatureDoesNotMatch"][1]
            raise Rejected(
                "SignatureDoesNotMatch", f"{message} server StringToSign is [{string_to_sign}]"
            )
        self._check_freshness(request)
        return query, names

    def _check_freshness(self, request: web.Request) -> None:
        try:
            sent = datetime.strptime(request.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise Rejected("IncompleteSignature", "x-acs-date is not ISO 8601 UTC") from None
        if abs(datetime.now(UTC) - sent.replace(tzinfo=UTC)) > MAX_SKEW:
            raise Rejected("InvalidTimeStamp.Expired")
        self._use_nonce(request.headers["x-acs-signature-nonce"])

    def _use_nonce(self, nonce: str) -> None:
        now = datetime.now(UTC)
        while self._nonce_times and now - self._nonce_times[0][0] > MAX_SKEW:
            self._nonces.discard(self._nonce_times.popleft()[1])
        if nonce in self._nonces:
            raise Rejected("SignatureNonceUsed")
        self._nonces.add(nonce)
        self._nonce_times.append((now, nonce))

    # -- SendSms ----------------------------------------------------------------------------

    def _send(
        self, request: web.Request, query: Mapping[str, str], signed: list[str]
    ) -> AliyunSend:
        if (request.headers.get("x-acs-action"), request.headers.get("x-acs-version")) != (
            "SendSms",
            "2017-05-25",
        ):
            raise Rejected("InvalidApi.NotFound")
        for name in REQUIRED:
            if not query.get(name):
                raise Rejected(f"Missing{name}", f"{name} is mandatory for this action.")
        forced = self.faults.pick(RANDOM_ERRORS)
        if forced is not None:
            raise Rejected(forced)
        phones = query["PhoneNumbers"].split(",")
        if not all(_PHONE.match(p.strip()) for p in phones):
            raise Rejected("isv.MOBILE_NUMBER_ILLEGAL")
        self._check_registered(query)
        return AliyunSend(
            phone_numbers=[p.strip() for p in phones],
            sign_name=query["SignName"],
            template_code=query["TemplateCode"],
            template_param=_template_param(query.get("TemplateParam")),
            out_id=query.get("OutId") or None,
            biz_id=f"{self.faults.digits(15)}^0",
            host=request.headers.get("Host", ""),
            signed_headers=signed,
        )

    def _check_registered(self, query: Mapping[str, str]) -> None:
        if self.sign_names is not None and query["SignName"] not in self.sign_names:
            raise Rejected("isv.SMS_SIGNATURE_ILLEGAL")
        if self.template_codes is not None and query["TemplateCode"] not in self.template_codes:
            raise Rejected("isv.SMS_TEMPLATE_ILLEGAL")

    def _schedule_reports(self, send: AliyunSend) -> None:
        records = []
        for phone in send.phone_numbers:
            failed = self.faults.chance(self.report_fail_rate)
            records.append(
                {
                    "phone_number": phone,
                    "send_time": _china_now(),
                    "report_time": _china_now(),
                    "success": not failed,
                    "err_code": "UNDELIV" if failed else "DELIVERED",
                    "err_msg": "用户接收失败" if failed else "用户接收成功",
                    "sms_size": "1",
                    "biz_id": send.biz_id,
                    "out_id": send.out_id or "",
                }
            )
        self.pusher.push(records)

    def _error(self, exc: Rejected) -> web.Response:
        status, message = ERRORS.get(exc.code, (200, exc.code))
        if exc.code.startswith("Missing"):
            status = 400
        message = exc.message or message
        self.rejections.append((exc.code, message))
        body = {"RequestId": _request_id(), "Code": exc.code, "Message": message}
        if status != 200:
            body["HostId"] = "dysmsapi.aliyuncs.com"
        return _json(status, body)

    async def _cleanup(self, app: web.Application) -> None:
        await self.pusher.close()


def _check_signed_headers(request: web.Request, names: list[str], body: bytes) -> None:
    present = {k.lower() for k in request.headers}
    acs = {k for k in present if k.startswith("x-acs-")}
    required = {"host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"}
    required |= {"content-type"} & present
    if not (required | acs) <= set(names) or not set(names) <= present:
        raise Rejected(
            "IncompleteSignature", "host, content-type and every x-acs-* header must be signed"
        )
    if request.headers["x-acs-content-sha256"] != hashlib.sha256(body).hexdigest():
        raise Rejected("SignatureDoesNotMatch", "x-acs-content-sha256 is not the body's hash")


def _parse_query(raw: str) -> dict[str, str]:
    pairs = (part.partition("=") for part in raw.split("&") if part)
    return {unquote_plus(k): unquote_plus(v) for k, _, v in pairs}


def _canonical_request(request: web.Request, names: list[str], query: Mapping[str, str]) -> str:
    headers = "".join(
        f"{name}:{','.join(v.strip() for v in request.headers.getall(name))}\n" for name in names
    )
    canonical_query = "&".join(
        f"{percent_encode(k)}={percent_encode(query[k])}" for k in sorted(query)
    )
    return "\n".join(
        [
            request.method,
            request.raw_path.partition("?")[0] or "/",
            canonical_query,
            headers,
            ";".join(names),
            request.headers["x-acs-content-sha256"],
        ]
    )


def _template_param(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Rejected("isv.INVALID_JSON_PARAM") from None
    if not isinstance(value, dict):
        raise Rejected("isv.INVALID_JSON_PARAM")
    return value


def _china_now() -> str:
    return (datetime.now(UTC) + CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


def _json(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", charset="utf-8"
    )
