"""The Tencent Cloud SMS adapter against the simulator, which verifies TC3-HMAC-SHA256
signatures from the raw request as the real API does."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from channels.base import CallbackRequest, CallbackResult, DeliveryReceipt, ProviderContext
from channels.errors import (
    CallbackAuthError,
    CallbackRejected,
    PermanentChannelError,
    ProviderConfigError,
    RecipientUnreachable,
    TransientChannelError,
)
from channels.simulator.tencent import TencentSmsSimulator
from channels.sms import CredentialsRejected
from channels.sms.tencent import TencentSmsProvider, e164, tc3_authorization

SECRET_ID, SECRET_KEY = "AKIDtest0000000000000000000000000000", "test-secret-key-0000000000"
APP_ID = "1400006666"
TOKEN = "callback-token-0123456789"
SIGN = "示例银行"
PARAMS = {"tail": "1234", "amount": "1,200.00", "patch": "理财3.5%"}
CONTENT: dict[str, Any] = {
    "body": "【示例银行】您尾号1234的账户支出1,200.00元",
    "provider_templates": {"tencent_sms": {"template_code": "449739", "params": PARAMS}},
}


class Harness:
    """The simulator and a callback receiver that runs the provider's handler."""

    def __init__(self, simulator: TencentSmsSimulator, server: BaseTestServer) -> None:
        self.simulator = simulator
        self.server = server
        self.callbacks: list[CallbackResult] = []
        self.provider: TencentSmsProvider | None = None

    def make(self, **overrides: Any) -> TencentSmsProvider:
        settings = {
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "sms_sdk_app_id": APP_ID,
            "sign_name": SIGN,
            "endpoint": str(self.server.make_url("/tencent")),
            "callback_token": TOKEN,
            **overrides,
        }
        self.provider = make_provider(settings)
        return self.provider

    async def receive(self, request: web.Request) -> web.Response:
        assert self.provider is not None
        callback = CallbackRequest(
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
            body=await request.read(),
        )
        try:
            result = await self.provider.handle_callback(callback)
        except CallbackAuthError:
            return web.Response(status=401)
        except CallbackRejected:
            return web.Response(status=400)
        self.callbacks.append(result)
        return web.Response(body=result.response_body, content_type=result.media_type)


def make_provider(settings: dict[str, Any]) -> TencentSmsProvider:
    return TencentSmsProvider(
        account="tencent-main", channel="sms", settings=settings, context=ProviderContext()
    )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    simulator = TencentSmsSimulator(credentials={SECRET_ID: SECRET_KEY}, sdk_app_ids=[APP_ID])
    app = web.Application()
    simulator.add_routes(app)
    harness: Harness | None = None

    async def receive(request: web.Request) -> web.Response:
        assert harness is not None
        return await harness.receive(request)

    app.router.add_post("/v1/callbacks/tencent-main", receive)
    app.router.add_post("/proxy-502/", _bad_gateway)
    async with TestServer(app, host="127.0.0.1") as server:
        harness = Harness(simulator, server)
        yield harness
        if harness.provider is not None:
            await harness.provider.close()


async def _bad_gateway(request: web.Request) -> web.Response:
    return web.Response(status=502, text="<html>bad gateway</html>")


async def send(provider: TencentSmsProvider, to: str = "13800138000") -> Any:
    return await provider.send(to=to, content=CONTENT, idempotency_key="k1", message_id="msg-1")


# -- signature: known answers ---------------------------------------------------------------


def test_signature_matches_the_documented_example() -> None:
    """Tencent Cloud's "Signature v3" document: DescribeInstances at 1551113065."""
    payload = (
        '{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    )
    authorization = tc3_authorization(
        secret_id="AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
        secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        method="POST",
        path="/",
        query="",
        content_type="application/json; charset=utf-8",
        host="cvm.tencentcloudapi.com",
        payload=payload.encode(),
        timestamp=1551113065,
        service="cvm",
    )
    assert authorization == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/"
        "tc3_request, SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


def documented_signature(body: bytes, host: str, timestamp: int, secret_key: str) -> str:
    """The documented steps, written apart from the adapter."""
    canonical_request = (
        "POST\n/\n\n"
        f"content-type:application/json\nhost:{host}\n\n"
        "content-type;host\n" + hashlib.sha256(body).hexdigest()
    )
    date = datetime.fromtimestamp(timestamp, UTC).date().isoformat()
    string_to_sign = (
        f"TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n"
        + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    )
    secret_date = hmac.new(("TC3" + secret_key).encode(), date.encode(), hashlib.sha256).digest()
    secret_service = hmac.new(secret_date, b"sms", hashlib.sha256).digest()
    secret_signing = hmac.new(secret_service, b"tc3_request", hashlib.sha256).digest()
    return hmac.new(secret_signing, string_to_sign.encode(), hashlib.sha256).hexdigest()


def test_signature_of_a_chinese_sendsms_matches_the_documented_steps() -> None:
    body = json.dumps(
        {"PhoneNumberSet": ["+8613800138000"], "SignName": SIGN, "TemplateParamSet": ["张三"]}
    ).encode()
    # 1551113065 is 2019-02-26 00:44:25 in Beijing: the scope must use the UTC date.
    authorization = tc3_authorization(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        method="POST",
        path="/",
        query="",
        content_type="application/json",
        host="sms.tencentcloudapi.com",
        payload=body,
        timestamp=1551113065,
    )
    expected = documented_signature(body, "sms.tencentcloudapi.com", 1551113065, SECRET_KEY)
    assert "/2019-02-25/sms/tc3_request," in authorization
    assert authorization.endswith(f"Signature={expected}")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("13800138000", "+8613800138000"),
        ("138 0013 8000", "+8613800138000"),
        ("8613800138000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("+8613800138000", "+8613800138000"),
        ("+85291234567", "+85291234567"),
    ],
)
def test_numbers_are_sent_in_e164(given: str, expected: str) -> None:
    assert e164(given) == expected


def test_a_number_that_is_not_a_mobile_is_unreachable() -> None:
    with pytest.raises(RecipientUnreachable) as caught:
        e164("021-12345678")
    assert caught.value.code == "invalid_phone"


# -- send -----------------------------------------------------------------------------------


async def test_a_send_is_accepted_with_a_valid_signature(harness: Harness) -> None:
    result = await send(harness.make())
    [accepted] = harness.simulator.sends
    assert result.provider_message_id == accepted.serial_no
    assert result.delivered is False
    assert result.detail["fee"] == 1
    assert accepted.phone_number == "+8613800138000"
    assert accepted.sdk_app_id == APP_ID
    assert accepted.sign_name == SIGN
    assert accepted.template_id == "449739"
    assert accepted.session_context == "msg-1"


async def test_template_params_keep_the_order_given(harness: Harness) -> None:
    provider = harness.make()
    ordered = {"z_first": "一", "a_second": "二", "m_third": "三"}
    content = {
        "body": "x",
        "provider_templates": {"tencent-main": {"template_code": "7", "params": ordered}},
    }
    await provider.send(to="13800138000", content=content, idempotency_key="k", message_id="m")
    assert harness.simulator.sends[0].template_params == ["一", "二", "三"]


async def test_the_signature_covers_the_host_actually_contacted(harness: Harness) -> None:
    endpoint = str(harness.server.make_url("/tencent")).replace("127.0.0.1", "localhost")
    provider = harness.make(endpoint=endpoint)
    await send(provider)
    assert harness.simulator.sends[0].host == f"localhost:{harness.server.port}"
    request = provider.build_request(to="13800138000", content=CONTENT, message_id="msg-2")
    request.headers["host"] = "sms.tencentcloudapi.com"
    answer = (await provider.http.send(request)).json()
    assert answer["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


async def test_a_tampered_body_is_refused(harness: Harness) -> None:
    provider = harness.make()
    request = provider.build_request(to="13800138000", content=CONTENT, message_id="msg-1")
    forged_body = request.content.replace(b"13800138000", b"13900139000")
    forged = httpx.Request("POST", request.url, headers=request.headers, content=forged_body)
    answer = (await provider.http.send(forged)).json()
    assert answer["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert not harness.simulator.sends


async def test_a_tampered_secret_is_refused_as_the_provider_refuses_it(harness: Harness) -> None:
    with pytest.raises(CredentialsRejected) as caught:
        await send(harness.make(secret_key="not-the-key"))
    assert isinstance(caught.value, PermanentChannelError)
    assert caught.value.code == "AuthFailure.SignatureFailure"


async def test_an_unknown_secret_id_is_refused(harness: Harness) -> None:
    with pytest.raises(CredentialsRejected) as caught:
        await send(harness.make(secret_id="AKIDunknown"))
    assert caught.value.code == "AuthFailure.SecretIdNotFound"


async def test_a_stale_timestamp_is_refused(harness: Harness) -> None:
    provider = harness.make()
    request = provider.build_request(to="13800138000", content=CONTENT, message_id="msg-1")
    provider._sign(request, int(datetime.now(UTC).timestamp()) - 600)  # re-signed, 10 min old
    answer = (await provider.http.send(request)).json()
    assert answer["Response"]["Error"]["Code"] == "AuthFailure.SignatureExpire"


async def test_an_unknown_app_id_is_refused(harness: Harness) -> None:
    with pytest.raises(CredentialsRejected) as caught:
        await send(harness.make(sms_sdk_app_id="1400000001"))
    assert caught.value.code == "UnauthorizedOperation.SmsSdkAppIdVerifyFail"


@pytest.mark.parametrize(
    "code",
    [
        "LimitExceeded.PhoneNumberThirtySecondLimit",  # per number
        "LimitExceeded.PhoneNumberDailyLimit",  # per number
        "InternalError.Timeout",  # whole request
        "RequestLimitExceeded",
    ],
)
async def test_transient_codes(harness: Harness, code: str) -> None:
    harness.simulator.force(code)
    with pytest.raises(TransientChannelError) as caught:
        await send(harness.make())
    assert caught.value.code == code


@pytest.mark.parametrize(
    "code",
    [
        "FailedOperation.PhoneNumberInBlacklist",
        "InvalidParameterValue.IncorrectPhoneNumber",
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.InsufficientBalanceInSmsPackage",
        "UnauthorizedOperation.RequestIpNotInWhitelist",
    ],
)
async def test_permanent_codes(harness: Harness, code: str) -> None:
    harness.simulator.force(code)
    with pytest.raises(PermanentChannelError) as caught:
        await send(harness.make())
    assert not caught.value.transient
    assert caught.value.code == code


async def test_a_number_the_platform_refuses_is_permanent(harness: Harness) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await send(harness.make(), to="+86123")
    assert caught.value.code == "InvalidParameterValue.IncorrectPhoneNumber"


async def test_a_timeout_is_transient(harness: Harness) -> None:
    harness.simulator.faults.latency = 1.0
    with pytest.raises(TransientChannelError) as caught:
        await send(harness.make(timeout=0.1))
    assert caught.value.code == "timeout"


async def test_http_errors_from_a_proxy(harness: Harness) -> None:
    provider = harness.make(endpoint=str(harness.server.make_url("/proxy-502")))
    with pytest.raises(TransientChannelError) as transient:
        await send(provider)
    assert transient.value.code == "http_502"
    provider = harness.make(endpoint=str(harness.server.make_url("/nowhere")))
    with pytest.raises(PermanentChannelError) as permanent:
        await send(provider)
    assert permanent.value.code == "http_404"


async def test_a_missing_template_is_permanent(harness: Harness) -> None:
    content = {"body": "free text", "provider_templates": {}}
    with pytest.raises(PermanentChannelError) as caught:
        await harness.make().send(
            to="13800138000", content=content, idempotency_key="k", message_id="m"
        )
    assert caught.value.code == "no_template"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"secret_id": None}, "secret_id"),
        ({"secret_key": ""}, "secret_key"),
        ({"sms_sdk_app_id": None}, "sms_sdk_app_id"),
        ({"sign_name": None}, "sign_name"),
        ({"endpoint": "sms.tencentcloudapi.com"}, "endpoint"),
        ({"max_connections": -1}, "max_connections"),
    ],
)
def test_settings_are_validated(overrides: dict[str, Any], named: str) -> None:
    settings = {
        "secret_id": SECRET_ID,
        "secret_key": SECRET_KEY,
        "sms_sdk_app_id": APP_ID,
        "sign_name": SIGN,
        **overrides,
    }
    with pytest.raises(ProviderConfigError, match=named):
        make_provider({k: v for k, v in settings.items() if v is not None})


def test_defaults() -> None:
    provider = make_provider(
        {
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "sms_sdk_app_id": APP_ID,
            "sign_name": SIGN,
        }
    )
    assert provider.endpoint == "https://sms.tencentcloudapi.com"
    assert provider.region == "ap-guangzhou"


# -- callbacks ------------------------------------------------------------------------------

STATUS = {
    "user_receive_time": "2015-10-17 08:03:04",
    "nationcode": "86",
    "mobile": "13800138000",
    "report_status": "SUCCESS",
    "errmsg": "DELIVRD",
    "description": "用户短信送达成功",
    "sid": "5000:104571066915705365784",
}
REPLY = {
    "extend": "",
    "mobile": "13800138000",
    "nationcode": "86",
    "sign": SIGN,
    "text": "退订",
    "time": 1457336869,
}


def callback(body: Any, token: str | None = TOKEN) -> CallbackRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    query = {"token": token} if token is not None else {}
    return CallbackRequest(method="POST", headers={}, query=query, body=raw)


def provider_for_callbacks() -> TencentSmsProvider:
    return make_provider(
        {
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "sms_sdk_app_id": APP_ID,
            "sign_name": SIGN,
            "callback_token": TOKEN,
        }
    )


async def test_status_reports_become_receipts() -> None:
    failed = {**STATUS, "report_status": "FAIL", "errmsg": "MN:0001", "description": "空号"}
    result = await provider_for_callbacks().handle_callback(callback([STATUS, failed]))
    at = datetime(2015, 10, 17, 8, 3, 4, tzinfo=timezone(timedelta(hours=8)))
    assert result.receipts == [
        DeliveryReceipt(
            delivered=True,
            provider_message_id=STATUS["sid"],
            code="DELIVRD",
            detail="用户短信送达成功",
            occurred_at=at,
        ),
        DeliveryReceipt(
            delivered=False,
            provider_message_id=STATUS["sid"],
            code="MN:0001",
            detail="空号",
            occurred_at=at,
        ),
    ]
    assert orjson.loads(result.response_body) == {"result": 0, "errmsg": "OK"}


async def test_a_reply_becomes_an_inbound_reply() -> None:
    result = await provider_for_callbacks().handle_callback(callback(REPLY))
    [reply] = result.replies
    assert (reply.sender, reply.text) == ("13800138000", "退订")
    assert reply.received_at == datetime.fromtimestamp(1457336869, UTC)
    foreign = {**REPLY, "nationcode": "852", "mobile": "91234567"}
    result = await provider_for_callbacks().handle_callback(callback([foreign]))
    assert result.replies[0].sender == "+85291234567"


@pytest.mark.parametrize("token", [None, "", "x" * 25])
async def test_a_bad_or_missing_token_is_refused(token: str | None) -> None:
    with pytest.raises(CallbackAuthError):
        await provider_for_callbacks().handle_callback(callback([STATUS], token=token))


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        ["SUCCESS"],
        [{**STATUS, "report_status": "MAYBE"}],
        [{**STATUS, "sid": None}],
        [{**STATUS, "user_receive_time": "17/10/2015"}],
        {**REPLY, "time": "noon"},
        {"unknown": 1},
    ],
)
async def test_malformed_callbacks_are_rejected(body: Any) -> None:
    with pytest.raises(CallbackRejected):
        await provider_for_callbacks().handle_callback(callback(body))


async def test_the_simulator_pushes_reports_and_replies_to_our_callback(harness: Harness) -> None:
    provider = harness.make()
    harness.simulator.pusher.url = str(
        harness.server.make_url(f"/v1/callbacks/tencent-main?token={TOKEN}")
    )
    result = await send(provider)
    await harness.simulator.pusher.wait()
    await harness.simulator.push_reply("13800138000", "TD")
    assert [p.status for p in harness.simulator.pusher.pushed] == [200, 200]
    [report, reply] = harness.callbacks
    assert report.receipts[0].provider_message_id == result.provider_message_id
    assert report.receipts[0].delivered
    assert reply.replies[0].text == "TD"
