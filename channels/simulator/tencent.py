"""A fake Tencent Cloud SMS API (``SendSms``, 2021-01-11) for tests, the demo and benchmarks.

It authenticates like the real API, from the raw request: the TC3-HMAC-SHA256
``Authorization`` (canonical request of method, path, query, the signed headers as received
with names and values lower-cased, the body's SHA-256; scope ``<date>/sms/tc3_request`` with
the UTC date of ``X-TC-Timestamp``; the key chain ``TC3<key>`` → date → service →
``tc3_request``) and the five-minute clock window, answering Tencent's own errors inside
``Response.Error`` (``AuthFailure.InvalidAuthorization``, ``AuthFailure.SecretIdNotFound``,
``AuthFailure.SignatureFailure``, ``AuthFailure.SignatureExpire``). Then it checks the
``SendSms`` parameters (``MissingParameter``, ``UnauthorizedOperation.SmsSdkAppIdVerifyFail``,
per-number ``InvalidParameterValue.IncorrectPhoneNumber``), records what it accepts in
``sends`` and, when a ``callback_url`` is set, pushes status reports to it after
``callback_delay`` seconds. ``push_reply`` pushes a customer's reply.

Mount it with ``TencentSmsSimulator(...).add_routes(app)`` (``POST /tencent/``) and point a
``tencent_sms`` provider's ``endpoint`` at ``http://host:port/tencent``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from channels.simulator.faults import CallbackPusher, Faults

CHINA = timedelta(hours=8)
MAX_SKEW_SECONDS = 300
REGIONS = frozenset({"ap-guangzhou", "ap-beijing", "ap-nanjing"})
_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/"
    r"(?P<service>[a-z0-9]+)/tc3_request, SignedHeaders=(?P<names>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_E164 = re.compile(r"^\+(?:861[3-9]\d{9}|(?!86)[1-9]\d{6,14})$")
RANDOM_ERRORS = ("LimitExceeded.PhoneNumberThirtySecondLimit", "InternalError.Timeout")
# Codes Tencent reports per number inside SendStatusSet; the others fail the whole request.
PER_NUMBER_PREFIXES = (
    "LimitExceeded.PhoneNumber",
    "InvalidParameterValue.IncorrectPhoneNumber",
    "FailedOperation.PhoneNumberInBlacklist",
    "FailedOperation.InsufficientBalanceInSmsPackage",
)
MESSAGES = {
    "AuthFailure.InvalidAuthorization": "Authorization header is not in the TC3 format.",
    "AuthFailure.SecretIdNotFound": "The SecretId is not found, please ensure it is correct.",
    "AuthFailure.SignatureFailure": (
        "The provided credentials could not be validated. Please check your signature is correct."
    ),
    "AuthFailure.SignatureExpire": (
        "Signature expired. Timestamp and server time cannot differ by more than 5 minutes."
    ),
    "InvalidAction": "The action SendSms is the only one this simulator knows.",
    "NoSuchVersion": "The requested version does not exist.",
    "UnsupportedRegion": "The region is not supported by SMS.",
    "FailedOperation.FailResolvePacket": "The request body could not be parsed.",
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail": "SmsSdkAppId verification failed.",
    "LimitExceeded.PhoneNumberThirtySecondLimit": "One message per number every 30 seconds.",
    "InternalError.Timeout": "The request timed out inside the SMS platform.",
    "InvalidParameterValue.IncorrectPhoneNumber": "Invalid phone number.",
    "FailedOperation.PhoneNumberInBlacklist": "The number is in the blocklist.",
}


@dataclass(frozen=True)
class TencentSend:
    """One accepted number of a ``SendSms``."""

    phone_number: str
    sdk_app_id: str
    sign_name: str
    template_id: str
    template_params: list[str]
    session_context: str | None
    serial_no: str
    host: str  # the Host header, as signed
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Rejected(Exception):
    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or MESSAGES.get(code, code)


class TencentSmsSimulator:
    """Fake Tencent Cloud ``SendSms``; see the module docstring."""

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        sdk_app_ids: Iterable[str] = ("1400000000",),
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int | None = None,
        callback_url: str | None = None,
        callback_delay: float = 0.0,
        report_fail_rate: float = 0.0,
    ) -> None:
        self.credentials = dict(credentials or {"test-secret-id": "test-secret-key"})
        self.sdk_app_ids = set(sdk_app_ids)
        self.faults = Faults(latency=latency, error_rate=error_rate, seed=seed)
        self.pusher = CallbackPusher(url=callback_url, delay=callback_delay)
        self.report_fail_rate = report_fail_rate
        self.sends: list[TencentSend] = []
        self.rejections: list[tuple[str, str]] = []

    def add_routes(self, app: web.Application, *, prefix: str = "/tencent") -> None:
        app.router.add_post(f"{prefix}/", self.handle)
        if prefix:
            app.router.add_post(prefix, self.handle)
        app.on_cleanup.append(self._cleanup)

    def force(self, code: str, count: int = 1) -> None:
        """The next ``count`` authenticated requests answer ``code`` (per number when Tencent
        reports that code per number)."""
        self.faults.force(code, count)

    async def handle(self, request: web.Request) -> web.Response:
        await self.faults.delay()
        body = await request.read()
        try:
            self._authenticate(request, body)
            payload = self._payload(request, body)
            statuses = self._send(request, payload)
        except Rejected as exc:
            self.rejections.append((exc.code, exc.message))
            error = {"Code": exc.code, "Message": exc.message}
            return _json({"Response": {"Error": error, "RequestId": _request_id()}})
        return _json({"Response": {"SendStatusSet": statuses, "RequestId": _request_id()}})

    async def push_reply(self, mobile: str, text: str, *, sign: str = "") -> None:
        """Push a customer's reply (the reply callback format) to the callback URL now."""
        record = {
            "extend": "",
            "mobile": mobile,
            "nationcode": "86",
            "sign": sign,
            "text": text,
            "time": int(time.time()),
        }
        self.pusher.push(record)
        await self.pusher.wait()

    # -- authentication ---------------------------------------------------------------------

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        match = _AUTH.match(request.headers.get("Authorization", ""))
        if match is None:
            raise Rejected("AuthFailure.InvalidAuthorization")
        timestamp = _timestamp(request)
        secret = self.credentials.get(match["id"])
        if secret is None:
            raise Rejected("AuthFailure.SecretIdNotFound")
        names = match["names"].split(";")
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        if match["date"] != date or match["service"] != "sms":
            raise Rejected("AuthFailure.SignatureFailure", "credential scope mismatch")
        if not {"content-type", "host"} <= set(names) or names != sorted(names):
            raise Rejected("AuthFailure.SignatureFailure", "content-type and host must be signed")
        digest = hashlib.sha256(_canonical_request(request, names, body).encode()).hexdigest()
        string_to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n{digest}"
        expected = _sign(secret, date, "sms", string_to_sign)
        if not hmac.compare_digest(expected, match["signature"]):
            raise Rejected("AuthFailure.SignatureFailure")
        if abs(time.time() - timestamp) > MAX_SKEW_SECONDS:
            raise Rejected("AuthFailure.SignatureExpire")

    # -- SendSms ----------------------------------------------------------------------------

    def _payload(self, request: web.Request, body: bytes) -> dict[str, Any]:
        if request.headers.get("X-TC-Action") != "SendSms":
            raise Rejected("InvalidAction")
        if request.headers.get("X-TC-Version") != "2021-01-11":
            raise Rejected("NoSuchVersion")
        if request.headers.get("X-TC-Region") not in REGIONS:
            raise Rejected("UnsupportedRegion")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Rejected("FailedOperation.FailResolvePacket") from None
        if not isinstance(payload, dict):
            raise Rejected("FailedOperation.FailResolvePacket")
        for name in ("PhoneNumberSet", "SmsSdkAppId", "TemplateId"):
            if not payload.get(name):
                raise Rejected("MissingParameter", f"The request is missing `{name}`.")
        if payload["SmsSdkAppId"] not in self.sdk_app_ids:
            raise Rejected("UnauthorizedOperation.SmsSdkAppIdVerifyFail")
        params = payload.get("TemplateParamSet", [])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise Rejected("InvalidParameterValue.TemplateParameterFormatError")
        return payload

    def _send(self, request: web.Request, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        forced = self.faults.pick(RANDOM_ERRORS)
        if forced is not None and not forced.startswith(PER_NUMBER_PREFIXES):
            raise Rejected(forced)
        statuses = []
        for phone in payload["PhoneNumberSet"]:
            code = forced or ("Ok" if _E164.match(str(phone)) else None)
            code = code or "InvalidParameterValue.IncorrectPhoneNumber"
            statuses.append(self._status(request, payload, str(phone), code))
        return statuses

    def _status(
        self, request: web.Request, payload: Mapping[str, Any], phone: str, code: str
    ) -> dict[str, Any]:
        context = payload.get("SessionContext") or None
        status = {"SerialNo": "", "PhoneNumber": phone, "Fee": 0, "SessionContext": context or ""}
        if code != "Ok":
            self.rejections.append((code, MESSAGES.get(code, code)))
            return {**status, "Code": code, "Message": MESSAGES.get(code, code), "IsoCode": ""}
        send = TencentSend(
            phone_number=phone,
            sdk_app_id=str(payload["SmsSdkAppId"]),
            sign_name=str(payload.get("SignName", "")),
            template_id=str(payload["TemplateId"]),
            template_params=list(payload.get("TemplateParamSet", [])),
            session_context=context,
            serial_no=f"5000:{self.faults.digits(28)}",
            host=request.headers.get("Host", ""),
        )
        self.sends.append(send)
        self._schedule_report(send)
        return {
            **status,
            "SerialNo": send.serial_no,
            "Fee": 1,
            "Code": "Ok",
            "Message": "send success",
            "IsoCode": "CN" if phone.startswith("+86") else "",
        }

    def _schedule_report(self, send: TencentSend) -> None:
        failed = self.faults.chance(self.report_fail_rate)
        nation, mobile = "", send.phone_number
        if mobile.startswith("+86"):
            nation, mobile = "86", mobile[3:]
        record = {
            "user_receive_time": (datetime.now(UTC) + CHINA).strftime("%Y-%m-%d %H:%M:%S"),
            "nationcode": nation,
            "mobile": mobile,
            "report_status": "FAIL" if failed else "SUCCESS",
            "errmsg": "UNDELIV" if failed else "DELIVRD",
            "description": "用户短信接收失败" if failed else "用户短信送达成功",
            "sid": send.serial_no,
        }
        self.pusher.push([record])

    async def _cleanup(self, app: web.Application) -> None:
        await self.pusher.close()


def _timestamp(request: web.Request) -> int:
    try:
        return int(request.headers.get("X-TC-Timestamp", ""))
    except ValueError:
        raise Rejected("AuthFailure.SignatureFailure", "X-TC-Timestamp is missing") from None


def _canonical_request(request: web.Request, names: list[str], body: bytes) -> str:
    path, _, query = request.raw_path.partition("?")
    headers = "".join(f"{name}:{request.headers.get(name, '').strip().lower()}\n" for name in names)
    unsigned = request.headers.get("X-TC-Content-SHA256") == "UNSIGNED-PAYLOAD"
    payload_hash = hashlib.sha256(b"UNSIGNED-PAYLOAD" if unsigned else body).hexdigest()
    return "\n".join([request.method, path or "/", query, headers, ";".join(names), payload_hash])


def _sign(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    def mac(key: bytes, message: str) -> bytes:
        return hmac.new(key, message.encode(), hashlib.sha256).digest()

    key = mac(mac(mac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _request_id() -> str:
    return str(uuid.uuid4())


def _json(body: Any) -> web.Response:
    # Tencent answers API errors with HTTP 200 too; the error is inside Response.
    return web.Response(body=orjson.dumps(body), content_type="application/json")
