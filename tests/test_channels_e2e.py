"""Real adapters inside the pipeline, against the provider simulator."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.base import ProviderContext
from channels.simulator.wechat import DEFAULT_APPS, WeChatSimulator, template_event_xml
from channels.wechat import WeChatTemplateProvider
from channels.wechat_events import wechat_signature
from tests.conftest import SCENARIO, VARIABLES, Platform

APP_ID, APP_SECRET = next(iter(DEFAULT_APPS.items()))
GOOD_OPENID = "oGood000000000000000000000001"[:28]
BLOCKED_OPENID = "oBlocked0000000000000000000002"[:28]
CALLBACK_TOKEN = "wechat-callback-token"
WECHAT_TEMPLATE = {
    "body": "尾号{{ account_tail }}支出{{ amount }}元",
    "wechat": {
        "template_id": "TPL-movement",
        "fields": {"keyword1": "尾号{{ account_tail }}", "keyword2": "{{ amount }}元"},
    },
}


@pytest.fixture
async def wechat_sim() -> AsyncIterator[WeChatSimulator]:
    sim = WeChatSimulator()
    await sim.start()
    yield sim
    await sim.stop()


async def _use_wechat(platform: Platform, sim: WeChatSimulator) -> None:
    provider = WeChatTemplateProvider(
        account="wx-main",
        channel="wechat",
        settings={
            "app_id": APP_ID,
            "app_secret": APP_SECRET,
            "callback_token": CALLBACK_TOKEN,
            "endpoint": sim.url,
        },
        context=ProviderContext(sessionmaker=platform.runtime.sessionmaker),
    )
    platform.runtime.providers.replace("wechat", [provider])
    await platform.create_scenario(templates={**SCENARIO["templates"], "wechat": WECHAT_TEMPLATE})


async def _send(platform: Platform, openid: str) -> dict[str, Any]:
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": VARIABLES,
                "recipient": {"wechat_openid": openid, "phone": "13800001234"},
            },
        )
    assert response.status_code == 202, response.text
    return await platform.wait_terminal(response.json()["id"])


async def test_wechat_43004_falls_back_to_sms(
    platform: Platform, wechat_sim: WeChatSimulator
) -> None:
    await _use_wechat(platform, wechat_sim)
    wechat_sim.fail_openid(BLOCKED_OPENID, 43004)
    message = await _send(platform, BLOCKED_OPENID)
    assert message["status"] == "delivered"
    assert message["channel"] == "sms"
    failed = next(e for e in message["events"] if e["type"] == "attempt_failed")
    assert failed["detail"]["code"] == "43004"
    assert failed["detail"]["provider"] == "wx-main"
    assert failed["detail"]["transient"] is False


async def test_wechat_send_then_receipt_callback(
    platform: Platform, wechat_sim: WeChatSimulator
) -> None:
    await _use_wechat(platform, wechat_sim)
    message = await _send(platform, GOOD_OPENID)
    assert message["status"] == "sent"
    assert message["provider"] == "wx-main"
    sent = wechat_sim.sent[-1]
    assert sent.template_id == "TPL-movement"
    assert sent.client_msg_id == f"{message['id']}:wechat"
    assert sent.data["keyword2"] == {"value": "1200.00元"}
    xml = template_event_xml(
        openid=GOOD_OPENID, msgid=int(message["provider_message_id"]), status="success"
    )
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex  # pushes are remembered by nonce
    query = {
        "signature": wechat_signature(CALLBACK_TOKEN, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    async with platform.client(None) as client:
        forged = await client.post(
            "/v1/callbacks/wx-main", params={**query, "signature": "0" * 40}, content=xml
        )
        assert forged.status_code == 401
        response = await client.post("/v1/callbacks/wx-main", params=query, content=xml)
        assert response.status_code == 200
        assert response.text == "success"
        echo = await client.get("/v1/callbacks/wx-main", params={**query, "echostr": "abc123"})
        assert echo.text == "abc123"
    async with platform.client("admin") as client:
        after = (await client.get(f"/v1/messages/{message['id']}")).json()
    assert after["status"] == "delivered"
    assert after["events"][-1]["detail"]["code"] == "success"
