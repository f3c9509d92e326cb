"""The Alibaba Cloud SMS adapter against the simulator, which verifies ACS3 signatures from
the raw request as the real gateway does."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Self

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
    TransientChannelError,
)
from channels.simulator.aliyun import AliyunSmsSimulator
from channels.sms import CredentialsRejected
from channels.sms.aliyun import AliyunSmsProvider, acs3_authorization, percent_encode

KEY_ID, SECRET = "test-access-key-id", "test-access-key-secret"
TOKEN = "callback-token-0123456789"
SIGN = "示例银行"
CONTENT: dict[str, Any] = {
    "body": "【示例银行】您尾号1234的账户支出1,200.00元",
    "provider_templates": {
        "aliyun-main": {
            "template_code": "SMS_154950909",
            "params": {"tail": "1234", "amount": "1,200.00", "patch": "理财 3.5%*~+"},
        }
    },
}


class Harness:
    """The simulator and a callback receiver that runs the provider's handler, on one
    local server."""

    def __init__(self, simulator: AliyunSmsSimulator, server: BaseTestServer) -> None:
        self.simulator = simulator
        self.server = server
        self.callbacks: list[CallbackResult] = []
        self.provider: AliyunSmsProvider | None = None

    @property
    def endpoint(self) -> str:
        return str(self.server.make_url("/aliyun"))

    def make(self, **overrides: Any) -> AliyunSmsProvider:
        settings = {
            "access_key_id": KEY_ID,
            "access_key_secret": SECRET,
            "sign_name": SIGN,
            "endpoint": self.endpoint,
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


def make_provider(settings: dict[str, Any]) -> AliyunSmsProvider:
    return AliyunSmsProvider(
        account="aliyun-main", channel="sms", settings=settings, context=ProviderContext()
    )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    simulator = AliyunSmsSimulator(credentials={KEY_ID: SECRET})
    app = web.Application()
    simulator.add_routes(app)
    harness: Harness | None = None

    async def receive(request: web.Request) -> web.Response:
        assert harness is not None
        return await harness.receive(request)

    app.router.add_post("/v1/callbacks/aliyun-main", receive)
    async with TestServer(app, host="127.0.0.1") as server:
        harness = Harness(simulator, server)
        yield harness
        if harness.provider is not None:
            await harness.provider.close()


async def send(provider: AliyunSmsProvider, to: str = "13800138000") -> Any:
    return await provider.send(to=to, content=CONTENT, idempotency_key="k1", message_id="msg-1")


# -- signature: known answers ---------------------------------------------------------------


def test_signature_matches_the_documented_example() -> None:
    """Alibaba Cloud's V3 signature document: RunInstances with fixed date and nonce."""
    headers = {
        "host": "ecs.cn-shanghai.aliyuncs.com",
        "x-acs-action": "RunInstances",
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
        "x-acs-date": "2023-10-26T10:22:32Z",
        "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
        "x-acs-version": "2014-05-26",
    }
    authorization = acs3_authorization(
        method="POST",
        path="/",
        query={
            "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            "RegionId": "cn-shanghai",
        },
        headers=headers,
        payload_hash=headers["x-acs-content-sha256"],
        access_key_id="YourAccessKeyId",
        access_key_secret="YourAccessKeySecret",
    )
    assert authorization == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


def documented_signature(query: dict[str, str], headers: dict[str, str], secret: str) -> str:
    """The V3 steps as the documentation spells them, written apart from the adapter."""

    def rfc3986(value: str) -> str:
        # Unreserved characters stay, every other UTF-8 byte is %XX (space %20, * %2A).
        unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
        return "".join(
            chr(byte) if chr(byte) in unreserved else f"%{byte:02X}"
            for byte in value.encode("utf-8")
        )

    canonical_query = "&".join(f"{rfc3986(k)}={rfc3986(query[k])}" for k in sorted(query))
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    canonical_headers = "".join(f"{k}:{lowered[k]}\n" for k in sorted(lowered))
    signed = ";".join(sorted(lowered))
    canonical_request = (
        f"POST\n/\n{canonical_query}\n{canonical_headers}\n{signed}\n"
        f"{lowered['x-acs-content-sha256']}"
    )
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical_request.encode()).hexdigest()
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def test_signature_of_a_chinese_sendsms_matches_the_documented_steps() -> None:
    query = {
        "PhoneNumbers": "13800138000",
        "SignName": SIGN,
        "TemplateCode": "SMS_154950909",
        "TemplateParam": '{"name":"张三","note":"a b*c~d+e"}',
        "OutId": "msg-1",
    }
    headers = {
        "Host": "dysmsapi.aliyuncs.com",
        "Accept": "application/json",
        "x-acs-action": "SendSms",
        "x-acs-version": "2017-05-25",
        "x-acs-date": "2024-02-23T06:38:59Z",
        "x-acs-signature-nonce": "7196eaae1f6b42d6b83e3198a407f98d",
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
    }
    authorization = acs3_authorization(
        method="POST",
        path="/",
        query=query,
        headers=headers,
        payload_hash=headers["x-acs-content-sha256"],
        access_key_id=KEY_ID,
        access_key_secret=SECRET,
    )
    assert authorization.endswith(f"Signature={documented_signature(query, headers, SECRET)}")


def test_percent_encoding_follows_the_sdk() -> None:
    assert percent_encode("a b*c~d+e/f=g&中") == "a%20b%2Ac~d%2Be%2Ff%3Dg%26%E4%B8%AD"


# -- send -----------------------------------------------------------------------------------


async def test_a_send_is_accepted_with_a_valid_signature(harness: Harness) -> None:
    provider = harness.make()
    result = await send(provider)
    [accepted] = harness.simulator.sends
    assert result.provider_message_id == accepted.biz_id
    assert result.delivered is False
    assert accepted.phone_numbers == ["13800138000"]
    assert accepted.sign_name == SIGN
    assert accepted.template_code == "SMS_154950909"
    assert accepted.template_param == CONTENT["provider_templates"]["aliyun-main"]["params"]
    assert accepted.out_id == "msg-1"
    assert {"host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"} <= set(
        accepted.signed_headers
    )


async def test_the_signature_covers_the_host_actually_contacted(harness: Harness) -> None:
    provider = harness.make(
        endpoint=str(harness.server.make_url("/aliyun")).replace("127.0.0.1", "localhost")
    )
    await send(provider)
    assert harness.simulator.sends[0].host == f"localhost:{harness.server.port}"
    # The same request presented under another Host no longer verifies.
    request = provider.build_request(to="13800138000", content=CONTENT, message_id="msg-2")
    request.headers["host"] = "dysmsapi.aliyuncs.com"
    response = await provider.http.send(request)
    assert response.status_code == 400
    assert response.json()["Code"] == "SignatureDoesNotMatch"


async def test_a_tampered_secret_is_refused_as_the_provider_refuses_it(harness: Harness) -> None:
    provider = harness.make(access_key_secret="not-the-secret")
    with pytest.raises(CredentialsRejected) as caught:
        await send(provider)
    # Permanent: this request can never pass; the error names the account, not the recipient.
    assert isinstance(caught.value, PermanentChannelError)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert not harness.simulator.sends


async def test_an_unknown_access_key_is_refused(harness: Harness) -> None:
    provider = harness.make(access_key_id="LTAI-unknown")
    with pytest.raises(CredentialsRejected) as caught:
        await send(provider)
    assert caught.value.code == "InvalidAccessKeyId.NotFound"


async def test_a_replayed_request_is_refused(harness: Harness) -> None:
    provider = harness.make()
    request = provider.build_request(to="13800138000", content=CONTENT, message_id="msg-1")
    assert (await provider.http.send(request)).status_code == 200
    replay = httpx.Request(request.method, request.url, headers=request.headers, content=b"")
    answer = (await provider.http.send(replay)).json()
    assert answer["Code"] == "SignatureNonceUsed"
    assert len(harness.simulator.sends) == 1


async def test_a_tampered_parameter_is_refused(harness: Harness) -> None:
    provider = harness.make()
    request = provider.build_request(to="13800138000", content=CONTENT, message_id="msg-1")
    url = str(request.url).replace("13800138000", "13900139000")
    forged = httpx.Request("POST", url, headers=request.headers, content=b"")
    answer = (await provider.http.send(forged)).json()
    assert answer["Code"] == "SignatureDoesNotMatch"
    assert "ACS3-HMAC-SHA256" in answer["Message"]  # the server's string to sign, as Aliyun


class _LongAgo(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Self:
        return cls(2020, 1, 1, tzinfo=UTC)


async def test_a_skewed_clock_is_refused(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("channels.sms.aliyun.datetime", _LongAgo)
    with pytest.raises(CredentialsRejected) as caught:
        await send(harness.make())
    assert caught.value.code == "InvalidTimeStamp.Expired"


@pytest.mark.parametrize(
    "code",
    [
        "isv.BUSINESS_LIMIT_CONTROL",
        "Throttling.User",
        "ServiceUnavailable",
        "InternalError",
        "isv.DAY_LIMIT_CONTROL",
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
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.INVALID_PARAMETERS",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.BLACK_KEY_CONTROL_LIMIT",
        "isv.SOMETHING_NEW",
    ],
)
async def test_permanent_codes(harness: Harness, code: str) -> None:
    harness.simulator.force(code)
    with pytest.raises(PermanentChannelError) as caught:
        await send(harness.make())
    assert not caught.value.transient
    assert caught.value.code == code


async def test_the_simulator_checks_numbers_signatures_and_templates(harness: Harness) -> None:
    provider = harness.make()
    with pytest.raises(PermanentChannelError) as caught:
        await send(provider, to="12345")
    assert caught.value.code == "isv.MOBILE_NUMBER_ILLEGAL"
    harness.simulator.sign_names = {"另一家银行"}
    with pytest.raises(PermanentChannelError) as caught:
        await send(provider)
    assert caught.value.code == "isv.SMS_SIGNATURE_ILLEGAL"


async def test_random_errors_are_transient(harness: Harness) -> None:
    harness.simulator.faults.error_rate = 1.0
    with pytest.raises(TransientChannelError):
        await send(harness.make())


async def test_a_timeout_is_transient(harness: Harness) -> None:
    harness.simulator.faults.latency = 1.0
    with pytest.raises(TransientChannelError) as caught:
        await send(harness.make(timeout=0.1))
    assert caught.value.code == "timeout"


async def test_an_unreachable_endpoint_is_transient(harness: Harness) -> None:
    provider = harness.make(endpoint="http://127.0.0.1:9/aliyun")
    with pytest.raises(TransientChannelError) as caught:
        await send(provider)
    assert caught.value.code in ("network", "timeout")


async def test_a_missing_template_is_permanent(harness: Harness) -> None:
    provider = harness.make()
    content = {"body": "free text", "provider_templates": {"tencent_sms": {"template_code": "1"}}}
    with pytest.raises(PermanentChannelError) as caught:
        await provider.send(to="13800138000", content=content, idempotency_key="k", message_id="m")
    assert caught.value.code == "no_template"
    assert not harness.simulator.sends


async def test_the_template_is_found_by_provider_type_too(harness: Harness) -> None:
    provider = harness.make()
    content = {"body": "x", "provider_templates": {"aliyun_sms": {"template_code": "SMS_9"}}}
    await provider.send(to="+8613800138000", content=content, idempotency_key="k", message_id="m")
    assert harness.simulator.sends[0].template_code == "SMS_9"
    assert harness.simulator.sends[0].template_param == {}


async def test_the_http_client_is_made_on_first_use_and_closed(harness: Harness) -> None:
    provider = harness.make()
    assert provider._client is None
    await send(provider)
    client = provider._client
    assert client is not None
    await provider.close()
    assert client.is_closed
    assert provider._client is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"access_key_secret": None}, "access_key_secret"),
        ({"access_key_id": ""}, "access_key_id"),
        ({"sign_name": 5}, "sign_name"),
        ({"endpoint": "ftp://dysmsapi.aliyuncs.com"}, "endpoint"),
        ({"timeout": 0}, "timeout"),
        ({"callback_token": "short"}, "callback_token"),
    ],
)
def test_settings_are_validated(overrides: dict[str, Any], named: str) -> None:
    settings = {"access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": SIGN}
    settings.update(overrides)
    with pytest.raises(ProviderConfigError, match=named):
        make_provider({k: v for k, v in settings.items() if v is not None})


def test_the_default_endpoint_is_dysmsapi() -> None:
    provider = make_provider(
        {"access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": SIGN}
    )
    assert provider.endpoint == "https://dysmsapi.aliyuncs.com"


# -- callbacks ------------------------------------------------------------------------------

REPORT = {
    "phone_number": "13800138000",
    "send_time": "2017-01-01 00:00:00",
    "report_time": "2017-01-01 00:00:05",
    "success": True,
    "err_code": "DELIVERED",
    "err_msg": "用户接收成功",
    "sms_size": "1",
    "biz_id": "12345^0",
    "out_id": "msg-1",
}
REPLY = {
    "phone_number": "13800138000",
    "send_time": "2017-09-01 00:00:00",
    "content": "退订",
    "sign_name": SIGN,
    "dest_code": "1234",
    "sequence_id": 1234567890,
}


def callback(body: Any, token: str | None = TOKEN, method: str = "POST") -> CallbackRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    query = {"token": token} if token is not None else {}
    return CallbackRequest(method=method, headers={}, query=query, body=raw)


def provider_for_callbacks() -> AliyunSmsProvider:
    return make_provider(
        {
            "access_key_id": KEY_ID,
            "access_key_secret": SECRET,
            "sign_name": SIGN,
            "callback_token": TOKEN,
        }
    )


async def test_delivery_reports_become_receipts() -> None:
    failed = {**REPORT, "success": False, "err_code": "IS:0010", "err_msg": "空号", "out_id": ""}
    result = await provider_for_callbacks().handle_callback(callback([REPORT, failed]))
    china = timezone(timedelta(hours=8))
    assert result.receipts == [
        DeliveryReceipt(
            delivered=True,
            provider_message_id="12345^0",
            message_id="msg-1",
            code="DELIVERED",
            detail="用户接收成功",
            occurred_at=datetime(2017, 1, 1, 0, 0, 5, tzinfo=china),
        ),
        DeliveryReceipt(
            delivered=False,
            provider_message_id="12345^0",
            message_id=None,
            code="IS:0010",
            detail="空号",
            occurred_at=datetime(2017, 1, 1, 0, 0, 5, tzinfo=china),
        ),
    ]
    assert result.receipts[0].occurred_at == datetime(2016, 12, 31, 16, 0, 5, tzinfo=UTC)
    assert orjson.loads(result.response_body) == {"code": 0, "msg": "接收成功"}
    assert result.media_type == "application/json"


async def test_smsup_messages_become_replies() -> None:
    result = await provider_for_callbacks().handle_callback(callback([REPLY]))
    [reply] = result.replies
    assert (reply.sender, reply.text) == ("13800138000", "退订")
    assert reply.received_at == datetime(2017, 8, 31, 16, 0, tzinfo=UTC)
    assert not result.receipts


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789", TOKEN.upper()])
async def test_a_bad_or_missing_token_is_refused(token: str | None) -> None:
    with pytest.raises(CallbackAuthError):
        await provider_for_callbacks().handle_callback(callback([REPORT], token=token))


async def test_callbacks_are_refused_when_no_token_is_configured() -> None:
    provider = make_provider(
        {"access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": SIGN}
    )
    with pytest.raises(CallbackAuthError, match="callback_token"):
        await provider.handle_callback(callback([REPORT]))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        [1, 2],
        [{"phone_number": "13800138000"}],
        [{**REPORT, "success": "maybe"}],
        [{**REPORT, "biz_id": ""}],
        [{**REPORT, "report_time": "yesterday"}],
        [{**REPLY, "content": ""}],
    ],
)
async def test_malformed_callbacks_are_rejected(body: Any) -> None:
    with pytest.raises(CallbackRejected):
        await provider_for_callbacks().handle_callback(callback(body))


async def test_a_get_is_rejected() -> None:
    with pytest.raises(CallbackRejected):
        await provider_for_callbacks().handle_callback(callback([REPORT], method="GET"))


async def test_the_simulator_pushes_reports_and_replies_to_our_callback(harness: Harness) -> None:
    provider = harness.make()
    harness.simulator.pusher.url = str(
        harness.server.make_url(f"/v1/callbacks/aliyun-main?token={TOKEN}")
    )
    result = await send(provider)
    await harness.simulator.pusher.wait()
    await harness.simulator.push_reply("13800138000", "退订 TD")
    assert [p.status for p in harness.simulator.pusher.pushed] == [200, 200]
    assert harness.simulator.pusher.pushed[0].answer == '{"code":0,"msg":"接收成功"}'.encode()
    [report, reply] = harness.callbacks
    assert report.receipts[0].provider_message_id == result.provider_message_id
    assert report.receipts[0].message_id == "msg-1"
    assert report.receipts[0].delivered
    assert reply.replies[0].text == "退订 TD"


async def test_pushes_with_a_wrong_token_are_refused(harness: Harness) -> None:
    harness.make()
    harness.simulator.pusher.url = str(harness.server.make_url("/v1/callbacks/aliyun-main?token=x"))
    await harness.simulator.push_reply("13800138000", "TD")
    assert harness.simulator.pusher.pushed[0].status == 401
    assert not harness.callbacks


async def test_phone_numbers_and_params_stay_out_of_the_http_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="icc.channels.http")
    await send(harness.make())
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "?<redacted>" in logged
    assert "13800138000" not in logged
    assert "1%2C200.00" not in logged
    assert SECRET not in logged
