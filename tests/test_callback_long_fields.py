"""A provider's report whose fields are longer than the columns they are stored in is taken
on both databases (PostgreSQL refuses what SQLite stores) without losing the rest of its
batch: a receipt with an id longer than any of ours is ignored, a reply from a sender longer
than any phone number, openid or address too, and a code longer than its column is cut."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from app.callbacks.models import EarlyReceipt
from app.messages.models import InboundMessage, Message
from channels.base import ProviderContext
from channels.sms.tencent import TencentSmsProvider
from tests.conftest import VARIABLES, Platform
from tests.providers import ReportingProvider

TOKEN = "callback-token-0123456789"
REPORT = {
    "user_receive_time": "2024-05-01 08:03:04",
    "nationcode": "86",
    "mobile": "13800001234",
    "report_status": "FAIL",
    "errmsg": "MK:0001",
    "description": "空号",
    "sid": "2433:346361993616911750227281303",
}
REPLY = {"extend": "", "mobile": "13800001234", "nationcode": "86", "sign": "s", "text": "TD"}


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


async def _push(platform: Platform, body: Any) -> None:
    _tencent(platform)
    async with platform.served_client() as client:
        response = await client.post(
            "/v1/callbacks/tencent-main",
            params={"token": TOKEN},
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, (platform.backend, response.status_code, response.text)


async def _early(platform: Platform) -> list[tuple[str | None, str | None]]:
    async with platform.runtime.sessionmaker() as session:
        rows = await session.execute(select(EarlyReceipt.provider_message_id, EarlyReceipt.code))
        return [(theirs, code) for theirs, code in rows]


async def _senders(platform: Platform) -> list[str]:
    async with platform.runtime.sessionmaker() as session:
        return list(await session.scalars(select(InboundMessage.sender)))


async def test_a_receipt_with_an_over_long_id_is_ignored_and_the_rest_kept(
    platform: Platform,
) -> None:
    await _push(platform, [{**REPORT, "sid": "9" * 200}, REPORT])
    assert await _early(platform) == [(REPORT["sid"], "MK:0001")]


async def test_an_over_long_code_is_cut_to_its_column(platform: Platform) -> None:
    await _push(platform, [{**REPORT, "errmsg": "E" * 100}])
    assert await _early(platform) == [(REPORT["sid"], "E" * 64)]


async def test_a_reply_from_an_over_long_sender_is_ignored_and_the_rest_kept(
    platform: Platform,
) -> None:
    long = {**REPLY, "mobile": "1" * 400, "time": 1700000000}
    await _push(platform, [long, {**REPLY, "time": 1700000000}])
    assert await _senders(platform) == ["13800001234"]


async def test_a_delivery_code_is_cut_to_its_column_and_kept_whole_on_the_timeline(
    platform: Platform,
) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    platform.runtime.providers.replace("wechat", [ReportingProvider("wechat", context)])
    recipient = {"phone": "13800001234", "wechat_openid": "oAbcd1234567890"}
    body = {"scenario": "account_movement", "customer_id": "C1", "variables": VARIABLES}
    async with platform.client("system") as client:
        response = await client.post("/v1/messages", json={**body, "recipient": recipient})
    message = await platform.wait_terminal(response.json()["id"])
    receipt = {"delivered": True, "message_id": message["id"], "code": "D" * 100}
    async with platform.client(None) as client:
        answer = await client.post(
            "/v1/callbacks/reporting-wechat",
            params={"token": ReportingProvider.TOKEN},
            json={"receipts": [receipt]},
        )
    assert answer.status_code == 200, answer.text
    async with platform.runtime.sessionmaker() as session:
        stored = await session.get(Message, message["id"])
        assert stored is not None
        assert (stored.status, stored.delivery_code) == ("delivered", "D" * 64)
    async with platform.client("admin") as client:
        after = (await client.get(f"/v1/messages/{message['id']}")).json()
    [delivered] = [e for e in after["events"] if e["type"] == "delivered"]
    assert delivered["detail"]["code"] == "D" * 100
