"""The WeChat template-message provider against the WeChat simulator on 127.0.0.1: sends,
access_token caching (in-process and through real Redis), errcode classification, and the
events WeChat pushes back (signature, URL check, receipts, replies, hostile XML)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from redis import asyncio as aioredis

from channels.base import CallbackRequest, CallbackResult, ProviderContext
from channels.errors import (
    CallbackAuthError,
    CallbackRejected,
    PermanentChannelError,
    ProviderConfigError,
    TransientChannelError,
)
from channels.simulator.wechat import (
    WeChatSimulator,
    openid_for,
    signed_query,
    template_event_xml,
)
from channels.wechat import WeChatTemplateProvider
from channels.wechat_token import KEY_PREFIX

APP_ID = "wx5im0000000000001"
SECRET = "test-app-secret"
CALLBACK_TOKEN = "test-callback-token"
TEMPLATE = "TPL_account_movement_0001"
OPENID = openid_for("customer-0001")
CONTENT: dict[str, Any] = {
    "template_id": TEMPLATE,
    "data": {"first": "您尾号1234的账户支出", "amount": "1,200.00"},
    "url": "https://bank.example/t/abc",
    "body": "fallback text, not for WeChat",
}


@pytest.fixture
async def simulator() -> AsyncIterator[WeChatSimulator]:
    sim = WeChatSimulator(apps={APP_ID: SECRET}, templates={TEMPLATE})
    await sim.start()
    yield sim
    await sim.stop()


def make_provider(
    sim: WeChatSimulator, *, redis_url: str | None = None, **settings: Any
) -> WeChatTemplateProvider:
    configured: dict[str, Any] = {
        "app_id": APP_ID,
        "app_secret": SECRET,
        "callback_token": CALLBACK_TOKEN,
        "endpoint": sim.url,
        "token_mode": "client_credential",
    }
    configured.update(settings)
    context = ProviderContext(redis_url=redis_url)
    return WeChatTemplateProvider(
        account="wechat-test", channel="wechat", settings=configured, context=context
    )


@pytest.fixture
async def provider(simulator: WeChatSimulator) -> AsyncIterator[WeChatTemplateProvider]:
    instance = make_provider(simulator)
    yield instance
    await instance.close()


async def send(
    provider: WeChatTemplateProvider, key: str = "m1", *, to: str = OPENID, **content: Any
) -> str:
    result = await provider.send(
        to=to,
        content={**CONTENT, **content},
        idempotency_key=f"{key}:wechat",
        message_id=key,
    )
    assert result.delivered is False  # WeChat reports delivery later, by event
    return result.provider_message_id


# -- sending ---------------------------------------------------------------------------------


async def test_send_posts_the_template_with_client_msg_id(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator
) -> None:
    msgid = await send(provider)
    [sent] = simulator.sent
    assert msgid == str(sent.msgid)
    assert sent.touser == OPENID
    assert sent.template_id == TEMPLATE
    assert sent.client_msg_id == "m1:wechat"
    assert sent.data == {
        "first": {"value": "您尾号1234的账户支出"},
        "amount": {"value": "1,200.00"},
    }
    assert sent.url == "https://bank.example/t/abc"
    assert sent.miniprogram is None


async def test_retry_with_the_same_key_is_deduplicated_by_wechat(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator
) -> None:
    assert await send(provider) == await send(provider)
    assert simulator.accepted == 1
    assert simulator.duplicates == 1


async def test_miniprogram_jump_takes_the_configured_appid(simulator: WeChatSimulator) -> None:
    provider = make_provider(simulator, miniprogram_appid="wxminiprogram00001")
    try:
        await send(provider, miniprogram={"pagepath": "pages/account?tail=1234"})
    finally:
        await provider.close()
    assert simulator.sent[0].miniprogram == {
        "appid": "wxminiprogram00001",
        "pagepath": "pages/account?tail=1234",
    }


async def test_token_is_fetched_once_for_many_sends(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator
) -> None:
    await asyncio.gather(*(send(provider, f"m{i}") for i in range(30)))
    await send(provider, "later")
    assert simulator.accepted == 31
    assert simulator.token_requests == 1


@pytest.mark.parametrize("spoil", ["invalidate_tokens", "expire_tokens"])
async def test_rejected_token_is_refreshed_and_the_send_retried_once(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator, spoil: str
) -> None:
    await send(provider, "m1")
    getattr(simulator, spoil)()  # the next send gets 40001 (invalid) or 42001 (expired)
    await send(provider, "m2")
    assert simulator.token_requests == 2
    assert simulator.send_requests == 3
    assert simulator.accepted == 2


async def test_token_rejected_again_after_refresh_is_transient(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator
) -> None:
    simulator.force_errors(40001, times=2)
    with pytest.raises(TransientChannelError) as caught:
        await send(provider)
    assert caught.value.code == "40001"
    assert simulator.send_requests == 2  # the send and exactly one retry
    assert simulator.token_requests == 2


async def test_stable_token_mode(simulator: WeChatSimulator) -> None:
    provider = make_provider(simulator, token_mode="stable_token")
    try:
        await send(provider, "m1")
        await send(provider, "m2")
        assert simulator.token_requests == 1
        # WeChat rejects a token that stable_token would hand back again: force a new one.
        simulator.force_errors(40001)
        await send(provider, "m3")
        assert simulator.token_requests == 3
        simulator.invalidate_tokens()
        await send(provider, "m4")
        assert simulator.token_requests == 4
    finally:
        await provider.close()
    assert simulator.accepted == 4


async def test_user_not_following_is_permanent(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator
) -> None:
    simulator.fail_openid(OPENID, 43004)
    with pytest.raises(PermanentChannelError) as caught:
        await send(provider)
    assert caught.value.code == "43004"


@pytest.mark.parametrize(
    ("change", "code"),
    [({"to": "not-an-openid"}, "40003"), ({"template_id": "TPL_unknown"}, "40037")],
)
async def test_bad_openid_or_template_is_permanent(
    provider: WeChatTemplateProvider, change: dict[str, str], code: str
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await send(provider, **change)
    assert caught.value.code == code


@pytest.mark.parametrize("errcode", [45009, -1])
async def test_rate_limit_and_busy_are_transient(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator, errcode: int
) -> None:
    simulator.force_errors(errcode)
    with pytest.raises(TransientChannelError) as caught:
        await send(provider)
    assert caught.value.code == str(errcode)
    await send(provider)  # the retry goes through


async def test_random_errors_are_transient() -> None:
    sim = WeChatSimulator(apps={APP_ID: SECRET}, error_rate=1.0, seed=7)
    await sim.start()
    provider = make_provider(sim)
    codes = set()
    try:
        for i in range(12):
            with pytest.raises(TransientChannelError) as caught:
                await send(provider, f"m{i}")
            codes.add(caught.value.code)
    finally:
        await provider.close()
        await sim.stop()
    assert codes == {"45009", "-1"}


async def test_served_beside_other_simulators_under_a_prefix() -> None:
    sim = WeChatSimulator(apps={APP_ID: SECRET})
    app = web.Application()
    sim.add_routes(app, prefix="/wechat")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    provider = make_provider(sim, endpoint=f"http://{host}:{port}/wechat/")
    try:
        await send(provider)
    finally:
        await provider.close()
        await runner.cleanup()
    assert sim.accepted == 1


async def test_timeout_is_transient(simulator: WeChatSimulator) -> None:
    provider = make_provider(simulator, timeout=0.1)
    try:
        await send(provider, "m1")
        simulator.latency = 0.5
        with pytest.raises(TransientChannelError) as caught:
            await send(provider, "m2")
    finally:
        await provider.close()
    assert caught.value.code == "timeout"


async def test_unreachable_api_is_transient(simulator: WeChatSimulator) -> None:
    url = simulator.url
    await simulator.stop()
    provider = make_provider(simulator, endpoint=url)
    try:
        with pytest.raises(TransientChannelError) as caught:
            await send(provider)
    finally:
        await provider.close()
    assert caught.value.code in ("network", "timeout")


async def test_missing_template_id_is_permanent_without_a_request(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await provider.send(
            to=OPENID, content={"body": "text only"}, idempotency_key="k", message_id="m"
        )
    assert caught.value.code == "no_template"
    assert simulator.send_requests == simulator.token_requests == 0


async def test_wrong_app_secret_is_permanent(simulator: WeChatSimulator) -> None:
    provider = make_provider(simulator, app_secret="wrong")
    try:
        with pytest.raises(PermanentChannelError) as caught:
            await send(provider)
    finally:
        await provider.close()
    assert caught.value.code == "40125"
    assert "wrong" not in caught.value.detail


async def test_secrets_stay_out_of_the_http_log(
    simulator: WeChatSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    provider = make_provider(simulator)
    try:
        await send(provider)
    finally:
        await provider.close()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "access_token=***" in logged
    assert "secret=***" in logged
    assert SECRET not in logged
    assert "SIM_" not in logged  # the simulator's tokens


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"app_id": ""}, "app_id"),
        ({"app_secret": None}, "app_secret"),
        ({"callback_token": ""}, "callback_token"),
        ({"token_mode": "password"}, "token_mode"),
        ({"endpoint": "api.weixin.qq.com"}, "endpoint"),
        ({"timeout": 0}, "timeout"),
    ],
)
async def test_invalid_settings_fail_fast(
    simulator: WeChatSimulator, settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ProviderConfigError, match=named):
        make_provider(simulator, **settings)


# -- the token shared through Redis ----------------------------------------------------------


@pytest.fixture
async def redis_app_id(redis_url: str) -> AsyncIterator[str]:
    """An app id of this test's own, so its Redis keys collide with nothing; removed after."""
    app_id = f"wxtest{uuid.uuid4().hex[:12]}"
    yield app_id
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(KEY_PREFIX + app_id, KEY_PREFIX + app_id + ":lock")
    finally:
        await client.aclose()


async def test_token_is_shared_through_redis(redis_url: str, redis_app_id: str) -> None:
    sim = WeChatSimulator(apps={redis_app_id: SECRET}, templates={TEMPLATE})
    await sim.start()
    first, second = (make_provider(sim, redis_url=redis_url, app_id=redis_app_id) for _ in range(2))
    try:
        await send(first, "m1")
        await send(second, "m2")
        assert sim.token_requests == 1
        await _assert_stored_with_expiry(redis_url, redis_app_id, sim.token_ttl)
        # Both hold a token WeChat no longer takes: one refresh between them, not two.
        sim.invalidate_tokens()
        await asyncio.gather(send(first, "m3"), send(second, "m4"))
        assert sim.token_requests == 2
        assert sim.accepted == 4
    finally:
        await first.close()
        await second.close()
        await sim.stop()


async def _assert_stored_with_expiry(redis_url: str, app_id: str, ttl: int) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.exists(KEY_PREFIX + app_id)
        assert 0 < await client.ttl(KEY_PREFIX + app_id) <= ttl - 300
    finally:
        await client.aclose()


# -- callbacks -------------------------------------------------------------------------------


def pushed(body: str | bytes, *, token: str = CALLBACK_TOKEN, **query: str) -> CallbackRequest:
    raw = body.encode() if isinstance(body, str) else body
    return CallbackRequest(
        method="POST", headers={}, query={**signed_query(token), **query}, body=raw
    )


@pytest.mark.parametrize(("status", "delivered"), [("success", True), ("failed:user block", False)])
async def test_template_send_event_becomes_a_receipt(
    provider: WeChatTemplateProvider, status: str, delivered: bool
) -> None:
    event = template_event_xml(openid=OPENID, msgid=200163840, status=status)
    result = await provider.handle_callback(pushed(event, openid=OPENID))
    [receipt] = result.receipts
    assert receipt.provider_message_id == "200163840"
    assert receipt.delivered is delivered
    assert receipt.code == status
    assert receipt.occurred_at is not None
    assert (result.response_body, result.media_type) == (b"success", "text/plain")


@pytest.mark.parametrize(
    "query",
    [
        signed_query("another-token"),
        {**signed_query(CALLBACK_TOKEN), "nonce": "changed"},
        {"timestamp": "1700000000", "nonce": "n"},
        {},
    ],
)
async def test_bad_or_missing_signature_is_refused(
    provider: WeChatTemplateProvider, query: dict[str, str]
) -> None:
    event = template_event_xml(openid=OPENID, msgid=1, status="success")
    request = CallbackRequest(method="POST", headers={}, query=query, body=event.encode())
    with pytest.raises(CallbackAuthError):
        await provider.handle_callback(request)


async def test_url_verification_echoes_echostr(provider: WeChatTemplateProvider) -> None:
    query = {**signed_query(CALLBACK_TOKEN), "echostr": "8237419826534"}
    request = CallbackRequest(method="GET", headers={}, query=query, body=b"")
    result = await provider.handle_callback(request)
    assert (result.response_body, result.media_type) == (b"8237419826534", "text/plain")


async def test_text_message_becomes_a_reply(provider: WeChatTemplateProvider) -> None:
    text = (
        "<xml><ToUserName><![CDATA[gh_bank]]></ToUserName>"
        f"<FromUserName><![CDATA[{OPENID}]]></FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[退订]]></Content><MsgId>23456789012345678</MsgId></xml>"
    )
    result = await provider.handle_callback(pushed(text))
    [reply] = result.replies
    assert (reply.sender, reply.text) == (OPENID, "退订")
    assert reply.received_at is not None
    assert result.response_body == b"success"


async def test_other_events_are_acknowledged(provider: WeChatTemplateProvider) -> None:
    subscribe = (
        f"<xml><FromUserName>{OPENID}</FromUserName><CreateTime>1700000000</CreateTime>"
        "<MsgType>event</MsgType><Event>subscribe</Event></xml>"
    )
    result = await provider.handle_callback(pushed(subscribe))
    assert (result.receipts, result.replies, result.response_body) == ([], [], b"success")


@pytest.mark.parametrize(
    "body",
    [
        '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><MsgType>&a;</MsgType></xml>',
        '<!doctype xml SYSTEM "file:///etc/passwd"><xml><MsgType>text</MsgType></xml>',
        "<xml><MsgType>text</MsgType>",
        "not xml at all",
        "<xml><Encrypt><![CDATA[cipher]]></Encrypt></xml>",  # AES mode: not supported
        "<root><MsgType>text</MsgType></root>",
        "<xml>" + "<Content>x</Content>" * 5000 + "</xml>",
        '<?xml version="1.0" encoding="UTF-16"?><xml/>'.encode("utf-16"),
    ],
)
async def test_hostile_or_malformed_xml_is_rejected(
    provider: WeChatTemplateProvider, body: str | bytes
) -> None:
    with pytest.raises(CallbackRejected):
        await provider.handle_callback(pushed(body))


async def test_simulator_pushes_a_signed_receipt_to_the_callback(
    provider: WeChatTemplateProvider, simulator: WeChatSimulator
) -> None:
    results: list[CallbackResult] = []

    async def callback(request: web.Request) -> web.Response:
        body = await request.read()
        query = dict(request.query)
        result = await provider.handle_callback(CallbackRequest("POST", {}, query, body))
        results.append(result)
        return web.Response(body=result.response_body, content_type=result.media_type)

    platform = web.Application()
    platform.router.add_post("/v1/callbacks/wechat-test", callback)
    runner = web.AppRunner(platform)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    simulator.pushes.url = f"http://{host}:{port}/v1/callbacks/wechat-test"
    simulator.pushes.token = CALLBACK_TOKEN
    blocked = openid_for("blocked-0001")
    simulator.set_delivery_status(blocked, "failed:user block")
    try:
        delivered_id = await send(provider, "m1")
        blocked_id = await send(provider, "m2", to=blocked)
        await simulator.wait_pushes()
    finally:
        await runner.cleanup()
    assert simulator.pushes.answers == [200, 200]
    receipts = {r.provider_message_id: r for result in results for r in result.receipts}
    assert receipts[delivered_id].delivered is True
    assert receipts[blocked_id].delivered is False
    assert receipts[blocked_id].code == "failed:user block"
