"""Alibaba Cloud SMS (``aliyun_sms``): ``SendSms`` of dysmsapi, API version 2017-05-25.

Signature: ACS3-HMAC-SHA256 (Alibaba Cloud's "V3" signature), because that is what the current
official Python SDK sends. ``alibabacloud_dysmsapi20170525.Client.send_sms_with_options``
(aliyun/alibabacloud-python-sdk, dysmsapi-20170525/alibabacloud_dysmsapi20170525/client.py)
calls ``call_api`` with style RPC, ``POST /`` and every parameter in the query string;
``alibabacloud_tea_openapi.client.Client.call_api`` (aliyun/darabonba-openapi,
python/alibabacloud_tea_openapi/client.py) only falls back to the old HMAC-SHA1 RPC signature
when ``signature_algorithm == "v2"``, otherwise ``do_request`` signs with
``ACS3-HMAC-SHA256`` through ``get_authorization`` (python/alibabacloud_tea_openapi/utils.py):

- headers ``host``, ``x-acs-action``, ``x-acs-version``, ``x-acs-date`` (UTC,
  ``%Y-%m-%dT%H:%M:%SZ``), ``x-acs-signature-nonce``, ``x-acs-content-sha256`` (hex SHA-256 of
  the body, here empty), ``accept``, ``user-agent``; all of them are signed, like the SDK signs
  every header it sets; we also set and sign ``content-type``, which the aiohttp transport
  would otherwise add unsigned to an empty POST;
- canonical request = method, path, canonical query (keys sorted, values percent-encoded as
  RFC 3986 with only ``~`` left as is: space ``%20``, ``*`` ``%2A``), canonical headers
  (``name:value\\n``, lower-case names, sorted), signed header names joined by ``;``, payload hash;
- string to sign = ``ACS3-HMAC-SHA256\\n`` + hex SHA-256 of the canonical request; signature =
  hex HMAC-SHA256 with the AccessKey secret; ``Authorization: ACS3-HMAC-SHA256
  Credential=<id>,SignedHeaders=<names>,Signature=<hex>``.

The ``host`` signed is the Host header of the request actually sent (the configured
``endpoint``), so an overridden endpoint or a forward proxy works; the query is sent exactly
as signed (the HTTP client does not re-quote it).

Settings: ``access_key_id``, ``access_key_secret``, ``sign_name`` (required); ``endpoint``
(default https://dysmsapi.aliyuncs.com), ``callback_token``, ``timeout``, ``max_connections``.

Parameters: PhoneNumbers, SignName, TemplateCode and TemplateParam (JSON of the template's
params) from the content's ``provider_templates``, OutId = our message id (echoed by receipts).

Outcome (the provider's ``Code`` is always kept as the error's ``code``):

=================================================  ===========================================
``OK``                                             sent; ``BizId`` is the provider message id
isv.BUSINESS_LIMIT_CONTROL, isv.DAY_LIMIT_CONTROL, transient: flow control or the account's
isv.MONTH_LIMIT_CONTROL, Throttling*               quota (another account may still send)
ServiceUnavailable, InternalError, isp.SYSTEM_ERROR transient: the platform is unwell
SignatureNonceUsed                                 transient: the retry carries a new nonce
SignatureDoesNotMatch, IncompleteSignature,        permanent, ``CredentialsRejected``: the same
InvalidAccessKeyId.*, InvalidTimeStamp.Expired,    request can never pass
isp.RAM_PERMISSION_DENY, Forbidden.RAM
isv.AMOUNT_NOT_ENOUGH, isv.OUT_OF_SERVICE,         permanent, ``ProviderFault``: this account
isv.PRODUCT_UN_SUBSCRIPT, isv.PRODUCT_UNSUBSCRIBE, cannot send (balance, suspended, SMS not
isv.ACCOUNT_*, isv.DENY_IP_RANGE                   enabled, source IP refused): the next
                                                   account of the channel is tried
isv.SMS_SIGNATURE_ILLEGAL, isv.SMS_SIGN_ILLEGAL,   permanent, ``ContentRefused``: signature or
isv.SMS_TEMPLATE_ILLEGAL,                          template not approved here; the next
isv.SMS_SIGNATURE_SCENE_ILLEGAL                    account is tried, this one's circuit is not
                                                   charged (it serves other content)
isv.MOBILE_NUMBER_ILLEGAL, isv.INVALID_PARAMETERS, permanent: number, parameters or content
isv.BLACK_KEY_CONTROL_LIMIT,                       rejected
isv.TEMPLATE_MISSING_PARAMETERS
... and any other code                             permanent (transient if HTTP 5xx)
timeouts, network errors, non-JSON answers         transient
=================================================  ===========================================

Callbacks (``POST /v1/callbacks/{account}?token=...``): the "HTTP batch push" of SmsReport
(JSON array of ``phone_number, send_time, report_time, success, err_code, err_msg, sms_size,
biz_id, out_id``) and of SmsUp (``phone_number, send_time, content, sign_name, dest_code,
sequence_id``), both answered ``{"code": 0, "msg": "接收成功"}``. Alibaba Cloud does not sign
these pushes (the documentation describes no signature, header or source check), so the
callback URL configured in the console carries a shared secret, ``?token=<callback_token>``,
compared in constant time; without ``callback_token`` every callback is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

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

DEFAULT_ENDPOINT = "https://dysmsapi.aliyuncs.com"
ACTION = "SendSms"
API_VERSION = "2017-05-25"
ALGORITHM = "ACS3-HMAC-SHA256"
USER_AGENT = "icc-aliyun-sms/1.0"
CALLBACK_ACK = {"code": 0, "msg": "接收成功"}

TRANSIENT_CODES = frozenset(
    {
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DAY_LIMIT_CONTROL",
        "isv.MONTH_LIMIT_CONTROL",
        "ServiceUnavailable",
        "InternalError",
        "isp.SYSTEM_ERROR",
        "SignatureNonceUsed",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidTimeStamp.Expired",
        "isp.RAM_PERMISSION_DENY",
        "Forbidden.RAM",
    }
)
# Refusals of this account, not of the recipient (balance, suspension, the product not
# enabled, a signature or template not approved here): another account may still send.
# isv.ACCOUNT_* (ACCOUNT_NOT_EXISTS, ACCOUNT_ABNORMAL) are matched by prefix.
ACCOUNT_CODES = frozenset(
    {
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.OUT_OF_SERVICE",
        "isv.PRODUCT_UN_SUBSCRIPT",
        "isv.PRODUCT_UNSUBSCRIBE",
        "isv.DENY_IP_RANGE",
    }
)
# Refusals of this content on this account (ContentRefused): another account is tried, and
# this one still serves other signatures and templates.
CONTENT_CODES = frozenset(
    {
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.SMS_SIGN_ILLEGAL",
        "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
        "isv.SMS_TEMPLATE_ILLEGAL",
    }
)


def percent_encode(value: str) -> str:
    """RFC 3986 as the SDK encodes: everything but unreserved characters, ``~`` kept."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))


def acs3_authorization(
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
    access_key_id: str,
    access_key_secret: str,
) -> str:
    """The ``Authorization`` header over ``headers`` (every one of them is signed)."""
    canonical = {k.lower(): v.strip() for k, v in headers.items()}
    names = sorted(canonical)
    canonical_request = "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query(query),
            "".join(f"{name}:{canonical[name]}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    signature = hmac.new(
        access_key_secret.encode(), f"{ALGORITHM}\n{digest}".encode(), hashlib.sha256
    ).hexdigest()
    signed_names = ";".join(names)
    return (
        f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_names},Signature={signature}"
    )


def acs3_date(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AliyunSmsProvider(SmsProvider):
    """Alibaba Cloud SMS ``SendSms`` with the SDK's ACS3-HMAC-SHA256 signature, and its
    SmsReport / SmsUp pushes; see the module docstring."""

    type_name = "aliyun_sms"
    default_rate = 5000.0  # SendSms allows 5,000 calls per second per account

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        self.access_key_id = self.config.text("access_key_id")
        self._secret = self.config.text("access_key_secret")
        self.sign_name = self.config.text("sign_name")
        self.endpoint = self.config.url("endpoint", DEFAULT_ENDPOINT)
        self._callback_token = self.config.callback_token()
        self._base = encoded_url(f"{self.endpoint}/")  # ``POST /`` under the endpoint
        self._path = raw_path(self._base)
        self._host = host_header(self._base)

    def read_outcome(self, response: HttpResponse, message_id: str) -> SendResult:
        return _outcome(response)

    def build_request(self, *, to: str, content: Mapping[str, Any], message_id: str) -> HttpRequest:
        """The ``SendSms`` request, signed over the Host header it will carry."""
        template_code, params = self.template_for(content)
        query = {
            "PhoneNumbers": to.strip(),
            "SignName": self.sign_name,
            "TemplateCode": template_code,
            "OutId": message_id,
        }
        if params:
            query["TemplateParam"] = orjson.dumps(params).decode()
        headers = self._signed_headers(b"")
        headers["authorization"] = acs3_authorization(
            method="POST",
            path=self._path,
            query=query,
            headers=headers,
            payload_hash=headers["x-acs-content-sha256"],
            access_key_id=self.access_key_id,
            access_key_secret=self._secret,
        )
        return HttpRequest("POST", f"{self._base}?{canonical_query(query)}", headers, b"")

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        """Every header the request carries, all of them signed. ``content-type`` is named
        here: the HTTP client would add application/octet-stream, unsigned, to an empty POST."""
        return {
            "host": self._host,
            "accept": "application/json",
            "user-agent": USER_AGENT,
            "content-type": "application/x-www-form-urlencoded",
            "x-acs-action": ACTION,
            "x-acs-version": API_VERSION,
            "x-acs-date": acs3_date(datetime.now(UTC)),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        }

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        """SmsReport receipts and SmsUp replies, after the URL token check."""
        check_callback_token(self._callback_token, request.query)
        if request.method.upper() != "POST":
            raise CallbackRejected("Alibaba Cloud pushes reports with POST")
        receipts: list[DeliveryReceipt] = []
        replies: list[InboundReply] = []
        for item in callback_items(request.body):
            if "content" in item:
                replies.append(_reply(item))
            elif "biz_id" in item or "success" in item:
                receipts.append(_receipt(item))
            else:
                raise CallbackRejected("neither a SmsReport nor a SmsUp record")
        return CallbackResult(
            receipts=receipts, replies=replies, response_body=json_body(CALLBACK_ACK)
        )


def _outcome(response: HttpResponse) -> SendResult:
    status = response.status_code
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise TransientChannelError(
            f"Aliyun answered HTTP {status} without a JSON object", code="bad_answer"
        )
    code = str(answer.get("Code") or f"http_{status}")
    if status == 200 and code == "OK":
        # Accepted: never fail it for a missing BizId, a fallback would send it twice.
        biz_id = answer.get("BizId") or answer.get("RequestId") or ""
        return SendResult(
            provider_message_id=str(biz_id), detail={"request_id": answer.get("RequestId")}
        )
    raise classify(code, str(answer.get("Message", ""))[:200], status)


def classify(code: str, message: str, status: int) -> ChannelError:
    """The error for a refused ``SendSms``; the provider's code is kept."""
    detail = f"Aliyun SendSms refused: {message or code} ({code})"
    if code in TRANSIENT_CODES or code.startswith("Throttling"):
        return TransientChannelError(detail, code=code)
    if code in CREDENTIAL_CODES:
        return CredentialsRejected(detail, code=code)
    if code in CONTENT_CODES:
        return ContentRefused(detail, code=code)
    if code in ACCOUNT_CODES or code.startswith("isv.ACCOUNT_"):
        return ProviderFault(detail, code=code)
    if status >= 500:
        return TransientChannelError(detail, code=code)
    return PermanentChannelError(detail, code=code)


def _receipt(item: Mapping[str, Any]) -> DeliveryReceipt:
    return DeliveryReceipt(
        delivered=_boolean(item.get("success")),
        provider_message_id=field(item, "biz_id"),
        message_id=optional_field(item, "out_id"),
        code=optional_field(item, "err_code"),
        detail=optional_field(item, "err_msg"),
        occurred_at=china_time(optional_field(item, "report_time")),
    )


def _reply(item: Mapping[str, Any]) -> InboundReply:
    return InboundReply(
        sender=field(item, "phone_number"),
        text=field(item, "content"),
        received_at=china_time(optional_field(item, "send_time")),
    )


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CallbackRejected("report without a boolean 'success'")
