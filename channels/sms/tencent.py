"""Tencent Cloud SMS (``tencent_sms``): ``SendSms`` of API version 2021-01-11.

Signature: TC3-HMAC-SHA256 exactly as tencentcloud-sdk-python signs
(tencentcloud/common/abstract_client.py ``_build_req_with_tc3_signature`` and
``_get_tc3_signature``, tencentcloud/common/sign.py ``Sign.sign_tc3``):

- ``POST /`` with a JSON body (``Content-Type: application/json``) and the headers
  ``Host``, ``X-TC-Action: SendSms``, ``X-TC-Version: 2021-01-11``, ``X-TC-Timestamp`` (Unix
  seconds), ``X-TC-Region``, ``X-TC-RequestClient``;
- canonical request = method, path, canonical query (empty for POST),
  ``content-type:<ct>\\nhost:<host>\\n``, ``content-type;host``, hex SHA-256 of the body;
- string to sign = ``TC3-HMAC-SHA256\\n<timestamp>\\n<date>/sms/tc3_request\\n`` + hex SHA-256
  of the canonical request, ``date`` being the UTC date of the timestamp;
- key = HMAC chain ``"TC3" + SecretKey`` → date → service → ``tc3_request``; signature = hex
  HMAC-SHA256 of the string to sign; ``Authorization: TC3-HMAC-SHA256
  Credential=<SecretId>/<scope>, SignedHeaders=content-type;host, Signature=<hex>``.

The service in the scope is the product name ``sms`` (the async SDK uses ``self._service``; an
older SDK derived it from the endpoint's first label, which breaks behind a proxy), and the
``host`` signed is the Host header of the request actually sent (the configured ``endpoint``).

Settings: ``secret_id``, ``secret_key``, ``sms_sdk_app_id``, ``sign_name`` (required);
``region`` (default ap-guangzhou), ``endpoint`` (default https://sms.tencentcloudapi.com),
``callback_token``, ``timeout``, ``max_connections``.

Parameters: PhoneNumberSet (one number, E.164: Chinese mobiles get ``+86``), SmsSdkAppId,
SignName, TemplateId, TemplateParamSet and SessionContext = our message id. Tencent templates
number their slots ({1}, {2}, ...), so TemplateParamSet is the *values* of the content's
``params`` mapping in the order they are given there (dict order): write the params in slot
order, their names are only for people.

Outcome (the provider's code is always kept as the error's ``code``): ``Response.Error`` for
the whole request, else ``SendStatusSet[0].Code`` for the number:

==========================================================  ==================================
``Ok``                                                      sent; ``SerialNo`` is the id
LimitExceeded.*, RequestLimitExceeded*, InternalError*      transient
AuthFailure.*, UnauthorizedOperation.*                      permanent, ``CredentialsRejected``
FailedOperation.InsufficientBalanceInSmsPackage,            permanent, ``ProviderFault``: this
FailedOperation.MissingSignatureList,                       account cannot send (no balance,
FailedOperation.MissingTemplateList,                        nothing approved, the app not its
FailedOperation.NotEnterpriseCertification,                 own): the next account of the
InvalidParameterValue.SdkAppIdNotExist                      channel is tried
FailedOperation.SignatureIncorrectOrUnapproved,             permanent, ``ContentRefused``: the
FailedOperation.TemplateIncorrectOrUnapproved               next account is tried; this one's
                                                            circuit is not charged
InvalidParameterValue.*, FailedOperation.* (blacklist,      permanent
content), MissingParameter, other
HTTP 5xx/429, timeouts, network errors, non-JSON answers    transient
HTTP 4xx and other statuses but 200 (Tencent Cloud API      permanent, ``ProviderFault``
answers 200 even for errors: something in between, such
as an egress proxy, refused)
==========================================================  ==================================

Callbacks (``POST /v1/callbacks/{account}?token=...``): the status callback (JSON array of
``user_receive_time, nationcode, mobile, report_status, errmsg, description, sid``) and the
reply callback (one JSON object ``extend, mobile, nationcode, sign, text, time``), answered
``{"result": 0, "errmsg": "OK"}``. Tencent Cloud does not sign these callbacks (its
documentation gives no signature or header), so the callback URL set in the console carries a
shared secret, ``?token=<callback_token>``, compared in constant time; without
``callback_token`` every callback is refused. Status reports do not echo SessionContext: they
are matched by ``sid`` (the SerialNo).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from channels.base import (
    CallbackRequest,
    CallbackResult,
    DeliveryReceipt,
    InboundReply,
    ProviderContext,
    SendResult,
)
from channels.errors import (
    CallbackRejected,
    ChannelError,
    ContentRefused,
    PermanentChannelError,
    ProviderFault,
    RecipientUnreachable,
    TransientChannelError,
)
from channels.http import HttpRequest, HttpResponse, encoded_url, host_header, raw_path
from channels.sms import (
    CredentialsRejected,
    SmsProvider,
    callback_items,
    check_callback_token,
    china_time,
    field,
    json_body,
    optional_field,
)

DEFAULT_ENDPOINT = "https://sms.tencentcloudapi.com"
DEFAULT_REGION = "ap-guangzhou"
SERVICE = "sms"
ACTION = "SendSms"
API_VERSION = "2021-01-11"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json"
REQUEST_CLIENT = "icc-tencent-sms/1.0"
# Refusals of this account, not of the recipient (no balance in the SMS package, the
# signature or template not approved here, the app not this account's): another account may
# still send.
ACCOUNT_CODES = frozenset(
    {
        "FailedOperation.InsufficientBalanceInSmsPackage",
        "FailedOperation.MissingSignatureList",
        "FailedOperation.MissingTemplateList",
        "FailedOperation.NotEnterpriseCertification",
        "InvalidParameterValue.SdkAppIdNotExist",
    }
)
# Refusals of this content on this account (ContentRefused): another account is tried, and
# this one still serves other signatures and templates.
CONTENT_CODES = frozenset(
    {
        "FailedOperation.SignatureIncorrectOrUnapproved",
        "FailedOperation.TemplateIncorrectOrUnapproved",
    }
)
CALLBACK_ACK = {"result": 0, "errmsg": "OK"}

_CN_MOBILE = re.compile(r"1[3-9]\d{9}")
_SEPARATORS = re.compile(r"[\s()-]")


def tc3_authorization(
    *,
    secret_id: str,
    secret_key: str,
    method: str,
    path: str,
    query: str,
    content_type: str,
    host: str,
    payload: bytes,
    timestamp: int,
    service: str = SERVICE,
) -> str:
    """The ``Authorization`` header of a TC3-HMAC-SHA256 request."""
    canonical_request = "\n".join(
        [
            method.upper(),
            path or "/",
            query,
            f"content-type:{content_type.strip().lower()}\nhost:{host.strip().lower()}\n",
            "content-type;host",
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"
    signature = _hmac(_signing_key(secret_key, date, service), string_to_sign).hex()
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


def _signing_key(secret_key: str, date: str, service: str) -> bytes:
    key = _hmac(f"TC3{secret_key}".encode(), date)
    return _hmac(_hmac(key, service), "tc3_request")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def e164(phone: str) -> str:
    """``+86`` in front of a Chinese mobile; numbers already in E.164 pass unchanged."""
    number = _SEPARATORS.sub("", phone)
    if number.startswith("+"):
        return number
    if number.startswith("00"):
        return f"+{number[2:]}"
    if _CN_MOBILE.fullmatch(number):
        return f"+86{number}"
    if number.startswith("86") and _CN_MOBILE.fullmatch(number[2:]):
        return f"+{number}"
    raise RecipientUnreachable(
        "the phone number is neither E.164 nor a Chinese mobile", code="invalid_phone"
    )


class TencentSmsProvider(SmsProvider):
    """Tencent Cloud SMS ``SendSms`` with the SDK's TC3-HMAC-SHA256 signature, and its status
    and reply callbacks; see the module docstring."""

    type_name = "tencent_sms"
    # A starting point; set rate_per_second to the account's contracted limit.
    default_rate = 1000.0

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        self.secret_id = self.config.text("secret_id")
        self._secret_key = self.config.text("secret_key")
        self.sdk_app_id = self.config.text("sms_sdk_app_id")
        self.sign_name = self.config.text("sign_name")
        self.region = self.config.text("region", DEFAULT_REGION)
        self.endpoint = self.config.url("endpoint", DEFAULT_ENDPOINT)
        self._callback_token = self.config.callback_token()
        self._url = encoded_url(f"{self.endpoint}/")  # ``POST /`` under the endpoint
        self._path = raw_path(self._url)
        self._host = host_header(self._url)

    def read_outcome(self, response: HttpResponse, message_id: str) -> SendResult:
        return _outcome(response)

    def build_request(self, *, to: str, content: Mapping[str, Any], message_id: str) -> HttpRequest:
        """The ``SendSms`` request, signed over the Host header it will carry."""
        template_id, params = self.template_for(content)
        payload: dict[str, Any] = {
            "PhoneNumberSet": [e164(to)],
            "SmsSdkAppId": self.sdk_app_id,
            "SignName": self.sign_name,
            "TemplateId": template_id,
            "SessionContext": message_id,
        }
        if params:
            payload["TemplateParamSet"] = list(params.values())
        headers = {"host": self._host, "content-type": CONTENT_TYPE}
        request = HttpRequest("POST", self._url, headers, json.dumps(payload).encode())
        self._sign(request, int(time.time()))
        return request

    def _sign(self, request: HttpRequest, timestamp: int) -> None:
        """Sign (or re-sign) ``request`` as of ``timestamp``."""
        request.headers.update(
            {
                "x-tc-action": ACTION,
                "x-tc-version": API_VERSION,
                "x-tc-timestamp": str(timestamp),
                "x-tc-region": self.region,
                "x-tc-requestclient": REQUEST_CLIENT,
            }
        )
        request.headers["authorization"] = tc3_authorization(
            secret_id=self.secret_id,
            secret_key=self._secret_key,
            method=request.method,
            path=self._path,
            query="",
            content_type=request.headers["content-type"],
            host=request.headers["host"],
            payload=request.content,
            timestamp=timestamp,
        )

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        """Status reports and replies, after the URL token check."""
        check_callback_token(self._callback_token, request.query)
        if request.method.upper() != "POST":
            raise CallbackRejected("Tencent Cloud pushes callbacks with POST")
        receipts: list[DeliveryReceipt] = []
        replies: list[InboundReply] = []
        for item in callback_items(request.body):
            if "report_status" in item:
                receipts.append(_receipt(item))
            elif "text" in item:
                replies.append(_reply(item))
            else:
                raise CallbackRejected("neither a status report nor a reply")
        return CallbackResult(
            receipts=receipts, replies=replies, response_body=json_body(CALLBACK_ACK)
        )


def _outcome(response: HttpResponse) -> SendResult:
    status = response.status_code
    if status != 200:
        # Tencent Cloud API answers 200 even for errors: another status comes from something
        # in between (a bank's egress proxy refusing us: 407), about this account's route.
        kind = TransientChannelError if status >= 500 or status == 429 else ProviderFault
        raise kind(f"Tencent SMS answered HTTP {status}", code=f"http_{status}")
    answer = _response_object(response)
    error = answer.get("Error")
    if isinstance(error, Mapping):
        raise classify(str(error.get("Code", "")), str(error.get("Message", "")))
    statuses = answer.get("SendStatusSet")
    first = statuses[0] if isinstance(statuses, list) and statuses else None
    if not isinstance(first, Mapping):
        raise TransientChannelError("Tencent SMS answered without SendStatusSet", code="bad_answer")
    code = str(first.get("Code", ""))
    if code == "Ok":
        # Accepted: never fail it for a missing SerialNo, a fallback would send it twice.
        serial = first.get("SerialNo") or answer.get("RequestId") or ""
        detail = {"fee": first.get("Fee"), "request_id": answer.get("RequestId")}
        return SendResult(provider_message_id=str(serial), detail=detail)
    raise classify(code, str(first.get("Message", "")))


def _response_object(response: HttpResponse) -> Mapping[str, Any]:
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        answer = None
    inner = answer.get("Response") if isinstance(answer, dict) else None
    if not isinstance(inner, Mapping):
        raise TransientChannelError("Tencent SMS answered without a Response", code="bad_answer")
    return inner


def classify(code: str, message: str) -> ChannelError:
    """The error for a refused request or number; the provider's code is kept."""
    code = code or "unknown"
    detail = f"Tencent SendSms refused: {message[:200] or code} ({code})"
    family = code.split(".", 1)[0]
    if family in ("LimitExceeded", "RequestLimitExceeded", "InternalError"):
        return TransientChannelError(detail, code=code)
    if family in ("AuthFailure", "UnauthorizedOperation"):
        return CredentialsRejected(detail, code=code)
    if code in CONTENT_CODES:
        return ContentRefused(detail, code=code)
    if code in ACCOUNT_CODES:
        return ProviderFault(detail, code=code)
    return PermanentChannelError(detail, code=code)


def _receipt(item: Mapping[str, Any]) -> DeliveryReceipt:
    status = field(item, "report_status").upper()
    if status not in ("SUCCESS", "FAIL"):
        raise CallbackRejected(f"report_status {status!r} is neither SUCCESS nor FAIL")
    return DeliveryReceipt(
        delivered=status == "SUCCESS",
        provider_message_id=field(item, "sid"),
        code=optional_field(item, "errmsg"),
        detail=optional_field(item, "description"),
        occurred_at=china_time(optional_field(item, "user_receive_time")),
    )


def _reply(item: Mapping[str, Any]) -> InboundReply:
    mobile = field(item, "mobile")
    nation = optional_field(item, "nationcode")
    sender = mobile if nation in (None, "86") else f"+{nation}{mobile}"
    return InboundReply(sender=sender, text=field(item, "text"), received_at=_unix(item))


def _unix(item: Mapping[str, Any]) -> datetime | None:
    value = item.get("time")
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):  # OSError: past the C library (1e18)
        raise CallbackRejected(f"time {value!r} is not a Unix timestamp") from None
