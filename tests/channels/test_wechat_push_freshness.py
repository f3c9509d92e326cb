"""WeChat pushes in plaintext mode are signed over token, timestamp and nonce, not the body:
a signed query is accepted within 5 minutes of its timestamp only, and within that window
with one body only (the same body again is WeChat retrying), so a signed URL seen once
(a proxy's log, a Referer) cannot carry another body, then or later."""

from __future__ import annotations

import time
import uuid

import pytest

from channels.base import CallbackRequest, ProviderContext
from channels.errors import CallbackAuthError
from channels.simulator.wechat import template_event_xml
from channels.wechat import WeChatTemplateProvider
from channels.wechat_events import verify_signature, wechat_signature

TOKEN = "test-callback-token"
OPENID = "oVICTIM000000000000000000000"
FORGED = (
    "<xml><ToUserName>gh_bank</ToUserName><FromUserName>oVICTIM000000000000000000000"
    "</FromUserName><CreateTime>1700000000</CreateTime><MsgType>text</MsgType>"
    "<Content>退订</Content></xml>"
)


def _provider(
    redis_url: str | None = None, app_id: str = "wx5im0000000000001"
) -> WeChatTemplateProvider:
    settings = {
        "app_id": app_id,
        "app_secret": "secret",
        "callback_token": TOKEN,
        "endpoint": "http://127.0.0.1:9",
        "token_mode": "client_credential",
    }
    return WeChatTemplateProvider(
        account="wechat-main",
        channel="wechat",
        settings=settings,
        context=ProviderContext(redis_url=redis_url),
    )


def _signed(timestamp: int | str, nonce: str = "n0nce") -> dict[str, str]:
    ts = str(timestamp)
    return {"signature": wechat_signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}


def _push(query: dict[str, str], body: str) -> CallbackRequest:
    return CallbackRequest("POST", {}, query, body.encode())


async def test_a_year_old_signed_query_is_not_accepted_with_a_new_body() -> None:
    """A forged "退订" from any customer's openid, under a signature captured a year ago."""
    stale = _signed(int(time.time()) - 365 * 24 * 3600)
    with pytest.raises(CallbackAuthError):
        await _provider().handle_callback(_push(stale, FORGED))


@pytest.mark.parametrize(
    ("skew", "fresh"), [(-299, True), (299, True), (-301, False), (301, False)]
)
def test_a_signature_is_accepted_within_5_minutes_of_its_timestamp(skew: int, fresh: bool) -> None:
    now = 1_800_000_000
    query = _signed(now + skew)
    if fresh:
        verify_signature(TOKEN, query, now=now)
    else:
        with pytest.raises(CallbackAuthError):
            verify_signature(TOKEN, query, now=now)


@pytest.mark.parametrize("timestamp", ["", "17e8", "１７００００００００", "9" * 30])
def test_a_timestamp_that_is_no_unix_time_is_refused(timestamp: str) -> None:
    with pytest.raises(CallbackAuthError):
        verify_signature(TOKEN, _signed(timestamp), now=1_700_000_000)


async def _same_query_twice(first: WeChatTemplateProvider, second: WeChatTemplateProvider) -> None:
    query = _signed(int(time.time()), nonce=uuid.uuid4().hex)
    receipt = template_event_xml(openid=OPENID, msgid=1, status="success")
    try:
        assert (await first.handle_callback(_push(query, receipt))).receipts
        assert (await second.handle_callback(_push(query, receipt))).receipts  # a retry
        with pytest.raises(CallbackAuthError):
            await second.handle_callback(_push(query, FORGED))
    finally:
        await first.close()
        await second.close()


async def test_a_signed_query_is_taken_again_with_its_body_only() -> None:
    provider = _provider()
    await _same_query_twice(provider, provider)


async def test_replicas_share_the_bodies_of_signed_queries_through_redis(redis_url: str) -> None:
    app_id = f"wxtest{uuid.uuid4().hex[:12]}"
    await _same_query_twice(_provider(redis_url, app_id), _provider(redis_url, app_id))
