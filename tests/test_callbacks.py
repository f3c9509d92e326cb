"""POST /v1/callbacks/{provider}: receipts (idempotent, fallback on failure), replies, auth."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from app.messages.models import InboundMessage
from channels.base import ProviderContext, SendResult
from tests.conftest import VARIABLES, Platform
from tests.providers import ReportingProvider

CONTACTS = {"phone": "13800001234", "wechat_openid": "oAbcd1234567890123456789wxyz"}


async def _setup(platform: Platform, channel: str) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    platform.runtime.providers.replace(channel, [ReportingProvider(channel, context)])


async def _send(platform: Platform) -> dict[str, Any]:
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": VARIABLES,
                "recipient": CONTACTS,
            },
        )
    assert response.status_code == 202, response.text
    return await platform.wait_terminal(response.json()["id"])


async def _callback(platform: Platform, provider: str, body: Any, token: str = "cb-token") -> Any:
    async with platform.client(None) as client:
        return await client.post(f"/v1/callbacks/{provider}", params={"token": token}, json=body)


async def test_delivered_receipt_is_applied_once(platform: Platform) -> None:
    await _setup(platform, "wechat")
    message = await _send(platform)
    assert message["status"] == "sent"
    receipt = {
        "delivered": True,
        "provider_message_id": message["provider_message_id"],
        "code": "success",
    }
    for _ in range(2):
        response = await _callback(platform, "reporting-wechat", {"receipts": [receipt]})
        assert response.status_code == 200
        assert response.json() == {"ok": True}
    async with platform.client("admin") as client:
        after = (await client.get(f"/v1/messages/{message['id']}")).json()
    assert after["status"] == "delivered"
    assert [e["type"] for e in after["events"]].count("delivered") == 1
    assert after["events"][-1]["detail"]["code"] == "success"


async def test_failed_receipt_falls_back_to_the_next_channel(platform: Platform) -> None:
    await _setup(platform, "wechat")
    message = await _send(platform)
    receipt = {"delivered": False, "message_id": message["id"], "code": "failed:user block"}
    assert (
        await _callback(platform, "reporting-wechat", {"receipts": [receipt]})
    ).status_code == 200
    after = await platform.wait_terminal(message["id"])
    deadline_types = [e["type"] for e in after["events"]]
    assert "delivery_failed" in deadline_types
    assert after["status"] == "delivered"
    assert after["channel"] == "sms"
    fallback = next(e for e in after["events"] if e["type"] == "fallback")
    assert fallback["detail"]["reason"] == "wechat: provider reported failed:user block"


async def test_failed_receipt_on_the_last_channel_fails_the_message(platform: Platform) -> None:
    await _setup(platform, "sms")
    await platform.create_scenario(
        key="sms_only", channels=["sms"], templates={"sms": {"body": "{{ amount }}"}}
    )
    async with platform.client("system") as client:
        sent = await client.post(
            "/v1/messages",
            json={
                "scenario": "sms_only",
                "customer_id": "C1",
                "variables": VARIABLES,
                "recipient": {"phone": "13800001234"},
            },
        )
    message = await platform.wait_terminal(sent.json()["id"])
    receipt = {
        "delivered": False,
        "provider_message_id": message["provider_message_id"],
        "code": "MK:0001",
        "detail": "空号",
    }
    await _callback(platform, "reporting-sms", {"receipts": [receipt]})
    async with platform.client("admin") as client:
        after = (await client.get(f"/v1/messages/{message['id']}")).json()
    assert after["status"] == "failed"
    assert after["status_reason"] == "sms: provider reported MK:0001 (空号)"


async def test_callback_auth_format_and_unknowns(platform: Platform) -> None:
    await _setup(platform, "sms")
    unknown = {"receipts": [{"delivered": True, "provider_message_id": "nope"}]}
    assert (await _callback(platform, "reporting-sms", unknown)).status_code == 200
    bad_token = await _callback(platform, "reporting-sms", unknown, token="wrong")
    assert bad_token.status_code == 401
    assert bad_token.json()["error"] == "Unauthorized"
    malformed = await _callback(platform, "reporting-sms", {"receipts": [{"bogus": 1}]})
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "BadCallback"
    assert (await _callback(platform, "no-such-provider", unknown)).status_code == 404
    assert (await _callback(platform, "sandbox-email", unknown)).status_code == 404


async def test_replies_are_stored_with_opt_out_flag(platform: Platform) -> None:
    await _setup(platform, "sms")
    replies = [
        {"sender": "13800001234", "text": " 退订 "},
        {"sender": "13800001234", "text": "谢谢"},
    ]
    assert (await _callback(platform, "reporting-sms", {"replies": replies})).status_code == 200
    async with platform.runtime.sessionmaker() as session:
        rows = (await session.scalars(select(InboundMessage).order_by(InboundMessage.text))).all()
    assert sorted((r.text.strip(), r.opt_out) for r in rows) == [("谢谢", False), ("退订", True)]
    assert {r.provider for r in rows} == {"reporting-sms"}


class SlowForSome(ReportingProvider):
    """Answers at once, except for one recipient whose send takes seconds."""

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        if to.endswith("8888"):
            await asyncio.sleep(2.0)
        return await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )


async def test_a_receipt_does_not_wait_for_a_slow_neighbour(platform: Platform) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    platform.runtime.providers.replace("sms", [SlowForSome("sms", context)])
    items = [
        {"customer_id": "A", "variables": VARIABLES, "recipient": {"phone": "13800000001"}},
        {"customer_id": "B", "variables": VARIABLES, "recipient": {"phone": "13800008888"}},
    ]
    async with platform.client("system") as client:
        sent = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
    fast = sent.json()["items"][0]["id"]
    message = await platform.wait_terminal(fast, timeout=1.5)  # not held by the slow one
    receipt = {"delivered": True, "provider_message_id": message["provider_message_id"]}
    assert (await _callback(platform, "reporting-sms", {"receipts": [receipt]})).status_code == 200
    async with platform.client("admin") as client:
        after = (await client.get(f"/v1/messages/{fast}")).json()
    assert after["status"] == "delivered"
