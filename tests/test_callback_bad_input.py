"""Junk sent to the provider callbacks gets a 4xx {"error","detail"}, never a 500: a
signature that cannot be WeChat's is a 401, a provider time that is no plausible Unix time
(Tencent's reply ``time``, WeChat's ``CreateTime``) a 400; a reply dated in the future counts
as received now."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from app.messages.models import InboundMessage
from app.timeutil import as_utc
from channels.base import ProviderContext
from channels.sms.tencent import TencentSmsProvider
from channels.wechat import WeChatTemplateProvider
from channels.wechat_events import wechat_signature
from tests.conftest import Platform

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
TOKEN = "callback-token-0123456789"


def _wechat(platform: Platform) -> None:
    provider = WeChatTemplateProvider(
        account="wechat-main",
        channel="wechat",
        settings={
            "app_id": "wx5im0000000000001",
            "app_secret": "secret",
            "callback_token": TOKEN,
            "endpoint": "http://127.0.0.1:9",
            "token_mode": "client_credential",
        },
        context=ProviderContext(),
    )
    platform.runtime.providers.replace("wechat", [provider])


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_non_ascii_wechat_signature_is_a_401(platform: Platform, method: str) -> None:
    _wechat(platform)
    query = {"signature": "签名", "timestamp": "1700000000", "nonce": "n", "echostr": "e"}
    async with platform.served_client() as client:
        response = await client.request(
            method, "/v1/callbacks/wechat-main", params=query, content=b"<xml/>"
        )
    assert response.status_code == 401, (response.status_code, response.text)
    assert set(response.json()) >= {"error", "detail"}


def _tencent(platform: Platform) -> None:
    provider = TencentSmsProvider(
        account="tencent-main",
        channel="sms",
        settings={
            "secret_id": "AKID0000",
            "secret_key": "secret",
            "sms_sdk_app_id": "1400000000",
            "sign_name": "示例银行",
            "callback_token": TOKEN,
            "endpoint": "http://127.0.0.1:9",
        },
        context=ProviderContext(),
    )
    platform.runtime.providers.replace("sms", [provider])


async def _tencent_reply(platform: Platform, at: int) -> httpx.Response:
    body: dict[str, object] = {"mobile": "13800001234", "nationcode": "86", "sign": "s"}
    body.update(extend="", text="TD", time=at)
    async with platform.served_client() as client:
        return await client.post(
            "/v1/callbacks/tencent-main",
            params={"token": TOKEN},
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )


async def test_a_tencent_reply_time_past_the_calendar_is_a_400(platform: Platform) -> None:
    _tencent(platform)
    response = await _tencent_reply(platform, 10**18)
    assert response.status_code == 400, (response.status_code, response.text)


async def test_a_reply_dated_in_the_future_counts_as_received_now(platform: Platform) -> None:
    _tencent(platform)
    before = datetime.now(UTC)
    response = await _tencent_reply(platform, 4102444800)  # 2100-01-01
    assert response.status_code == 200, response.text
    async with platform.runtime.sessionmaker() as session:
        [received] = (await session.scalars(select(InboundMessage.received_at))).all()
    assert before <= as_utc(received) <= datetime.now(UTC)


@pytest.mark.parametrize("created", ["99999999999999999999", "²", "1e9"])
async def test_an_implausible_wechat_create_time_is_a_400(platform: Platform, created: str) -> None:
    _wechat(platform)
    body = (
        "<xml><ToUserName><![CDATA[gh_bank]]></ToUserName>"
        "<FromUserName><![CDATA[oA]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"
        "<MsgID>1</MsgID><Status><![CDATA[success]]></Status></xml>"
    )
    ts, nonce = str(int(time.time())), "n0nce"
    query = {"signature": wechat_signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
    async with platform.served_client() as client:
        response = await client.post(
            "/v1/callbacks/wechat-main", params=query, content=body.encode()
        )
    assert response.status_code == 400, (response.status_code, response.text)
