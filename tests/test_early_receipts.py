"""Receipts that come before the worker has recorded the send are kept and applied by the
sweeper once the message is sent: none is lost, each counts once, the unmatched expire."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.callbacks import service
from app.callbacks.models import EarlyReceipt
from app.messages.models import Message
from app.timeutil import utcnow
from channels.base import (
    CallbackResult,
    ChannelProvider,
    DeliveryReceipt,
    ProviderContext,
    SendResult,
)
from channels.errors import TransientChannelError
from tests.conftest import VARIABLES, Platform
from tests.providers import ReportingProvider, ScriptedProvider

CONTACTS = {"phone": "13800001234", "wechat_openid": "oAbcd1234567890123456789wxyz"}
AT = datetime(2026, 11, 23, 9, 30, 15, tzinfo=UTC)


class HeldProvider(ReportingProvider):
    """Sends at once (the provider knows its id) but answers only when released: the
    message stays "sending" meanwhile, as while a worker records outcomes in a batch."""

    def __init__(self, channel: str, context: ProviderContext) -> None:
        super().__init__(channel, context)
        self.release = asyncio.Event()
        self.sent: dict[str, str] = {}  # our id -> the provider's

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        result = await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )
        assert result.provider_message_id is not None
        self.sent[message_id] = result.provider_message_id
        await self.release.wait()
        return result


async def _held_send(
    platform: Platform,
    held: HeldProvider | None = None,
    *backups: ChannelProvider,
    channels: list[str] | None = None,
) -> tuple[HeldProvider, str, str]:
    """A message whose WeChat send is held (by ``held``, before ``backups``): (provider,
    our id, the provider's id)."""
    await platform.create_scenario()
    if held is None:
        held = HeldProvider("wechat", ProviderContext(sessionmaker=platform.runtime.sessionmaker))
    platform.runtime.providers.replace("wechat", [held, *backups])
    body: dict[str, Any] = {
        "scenario": "account_movement",
        "customer_id": "C1",
        "variables": VARIABLES,
        "recipient": CONTACTS,
    }
    if channels is not None:
        body["channels"] = channels
    async with platform.client("system") as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    for _ in range(300):
        if message_id in held.sent:
            break
        await asyncio.sleep(0.02)
    assert (await _message(platform, message_id))["status"] == "sending"
    return held, message_id, held.sent[message_id]


async def _message(platform: Platform, message_id: str) -> dict[str, Any]:
    async with platform.client("admin") as client:
        response = await client.get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _wait_status(
    platform: Platform, message_id: str, *statuses: str, drained: bool = True
) -> dict[str, Any]:
    """Poll until the message has one of ``statuses`` (and, if ``drained``, no early
    receipt is left)."""
    deadline = asyncio.get_running_loop().time() + 15.0
    while True:
        body = await _message(platform, message_id)
        if body["status"] in statuses and not (drained and await _early_count(platform)):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"message still {body['status']}: {body}")
        await asyncio.sleep(0.05)


async def _callback(platform: Platform, receipts: list[dict[str, Any]]) -> None:
    async with platform.client(None) as client:
        response = await client.post(
            "/v1/callbacks/reporting-wechat",
            params={"token": "cb-token"},
            json={"receipts": receipts},
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}  # the provider's expected answer, as before


async def _early_count(platform: Platform) -> int:
    async with platform.runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(EarlyReceipt)) or 0)


async def _delivery_code(platform: Platform, message_id: str) -> str | None:
    async with platform.runtime.sessionmaker() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        return message.delivery_code


@pytest.mark.parametrize("named_by", ["message_id", "provider_message_id"])
async def test_a_receipt_before_the_send_is_recorded_is_applied_once_sent(
    platform: Platform, named_by: str
) -> None:
    held, ours, theirs = await _held_send(platform)
    receipt = {
        "delivered": True,
        named_by: ours if named_by == "message_id" else theirs,
        "code": "success",
        "occurred_at": AT.isoformat(),
    }
    await _callback(platform, [receipt])
    await _callback(platform, [receipt])  # the provider resends it: counts once
    assert await _early_count(platform) == 2
    assert (await _message(platform, ours))["status"] == "sending"
    held.release.set()
    after = await _wait_status(platform, ours, "delivered")
    assert datetime.fromisoformat(after["delivered_at"]) == AT
    assert await _delivery_code(platform, ours) == "success"
    delivered = [e for e in after["events"] if e["type"] == "delivered"]
    assert len(delivered) == 1
    assert delivered[0]["detail"]["code"] == "success"
    assert datetime.fromisoformat(delivered[0]["at"]) == AT


async def test_an_early_failure_receipt_falls_back_once_sent(platform: Platform) -> None:
    held, ours, _ = await _held_send(platform)
    receipt = {"delivered": False, "message_id": ours, "code": "failed:user block"}
    await _callback(platform, [receipt])
    held.release.set()
    after = await _wait_status(platform, ours, "delivered", "failed")
    assert after["status"] == "delivered"
    assert after["channel"] == "sms"
    types = [e["type"] for e in after["events"]]
    assert types.count("delivery_failed") == 1
    fallback = next(e for e in after["events"] if e["type"] == "fallback")
    assert fallback["detail"]["reason"] == "wechat: provider reported failed:user block"


async def test_a_receipt_after_the_send_is_applied_at_once(platform: Platform) -> None:
    held, ours, theirs = await _held_send(platform)
    held.release.set()
    assert (await _wait_status(platform, ours, "sent"))["status"] == "sent"
    receipt = {"delivered": True, "provider_message_id": theirs, "code": "success"}
    await _callback(platform, [receipt])
    await _callback(platform, [receipt, {**receipt, "message_id": ours}])  # duplicates
    assert await _early_count(platform) == 0  # a terminal message's receipt is not kept
    after = await _message(platform, ours)  # no sweep needed
    assert after["status"] == "delivered"
    assert [e["type"] for e in after["events"]].count("delivered") == 1


async def test_an_early_receipt_that_never_finds_its_message_expires(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    platform.runtime.providers.replace("wechat", [ReportingProvider("wechat", context)])
    await _callback(platform, [{"delivered": True, "provider_message_id": "nobody-1"}])
    assert await _early_count(platform) == 1
    now = utcnow()
    async with platform.runtime.sessionmaker() as session:  # younger than the limit: kept
        applied, expired = await service.apply_early(
            session, now=now, expire_before=now - timedelta(hours=24), limit=100
        )
        await session.commit()
    assert (applied.delivered, expired) == (0, 0)
    assert await _early_count(platform) == 1
    with caplog.at_level(logging.INFO, logger="icc.callbacks"):
        async with platform.runtime.sessionmaker() as session:
            later = now + timedelta(hours=25)
            _, expired = await service.apply_early(
                session, now=later, expire_before=later - timedelta(hours=24), limit=100
            )
            await session.commit()
    assert expired == 1
    assert await _early_count(platform) == 0
    logged = [r for r in caplog.records if "expired" in r.getMessage()]
    assert [getattr(r, "provider_message_id", None) for r in logged] == ["nobody-1"]


async def test_the_pending_count_of_a_callback(platform: Platform) -> None:
    held, ours, _ = await _held_send(platform)
    async with platform.runtime.sessionmaker() as session:
        result = CallbackResult(
            receipts=[
                DeliveryReceipt(delivered=True, message_id=ours),
                DeliveryReceipt(delivered=True, provider_message_id="not-yet-known"),
                DeliveryReceipt(delivered=True, message_id="msg_no_such_message"),
            ],
            replies=[],
            response_body=b"",
        )
        applied = await service.apply(
            session, provider="reporting-wechat", channel="wechat", result=result
        )
        await session.commit()
    assert (applied.pending, applied.unknown, applied.delivered) == (2, 1, 0)
    held.release.set()
    await _wait_status(platform, ours, "delivered", drained=False)
    assert await _early_count(platform) == 1  # the unknown provider id waits to expire


async def test_sweepers_at_the_same_time_apply_an_early_receipt_once(platform: Platform) -> None:
    held, ours, theirs = await _held_send(platform)
    receipts = [{"delivered": True, "provider_message_id": theirs, "code": "success"}] * 3
    await _callback(platform, receipts)
    held.release.set()
    await _wait_status(platform, ours, "sent", "delivered", drained=False)

    async def sweep() -> None:
        now = utcnow()
        async with platform.runtime.sessionmaker() as session:
            await service.apply_early(
                session, now=now, expire_before=now - timedelta(hours=24), limit=100
            )
            await session.commit()

    await asyncio.gather(sweep(), sweep(), sweep())  # beside the runtime's own sweeper
    after = await _wait_status(platform, ours, "delivered")
    assert [e["type"] for e in after["events"]].count("delivered") == 1


class HeldThenTimedOut(HeldProvider):
    """Gets the message to the customer, but its answer is lost: a timeout here."""

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )
        raise TransientChannelError("no answer within the timeout", code="timeout")


async def test_a_receipt_for_an_attempt_that_failed_over_goes_on_the_timeline(
    platform: Platform,
) -> None:
    """The first provider timed out here but delivered; the backup then sent it again. Its
    report, early or late, is noted on the timeline once and changes nothing else."""
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    first = HeldThenTimedOut("wechat", context)
    backup = ScriptedProvider("wechat", context, errors=[])
    _, ours, _ = await _held_send(platform, first, backup, channels=["wechat"])
    delivered = {"delivered": True, "message_id": ours, "code": "DELIVRD"}
    await _callback(platform, [delivered])  # while the first attempt is still out: early
    assert await _early_count(platform) == 1
    first.release.set()
    after = await _wait_status(platform, ours, "sent", "delivered")  # the early row applied
    assert after["provider"] == backup.account
    failed = {"delivered": False, "message_id": ours, "code": "UNDELIV"}
    await _callback(platform, [failed, delivered])  # late, and a resend of the first
    final = await _message(platform, ours)
    assert final["status"] == after["status"]  # no fallback, no failure
    notes = [e for e in final["events"] if e["type"] == "earlier_attempt_receipt"]
    assert [(n["detail"]["provider"], n["detail"]["delivered"]) for n in notes] == [
        ("reporting-wechat", True),
        ("reporting-wechat", False),
    ]
    assert notes[0]["detail"]["code"] == "DELIVRD"
    assert "failover" in [e["type"] for e in final["events"]]


async def test_an_early_report_on_a_retried_attempt_goes_on_the_timeline(
    platform: Platform,
) -> None:
    """A report naming our message with another id than the send's, come before the send
    was recorded, is about a retried attempt: once sent, it is noted and fails nothing."""
    held, ours, _ = await _held_send(platform)
    stale = {
        "delivered": False,
        "message_id": ours,
        "provider_message_id": "first-try",
        "code": "MK:0001",
    }
    await _callback(platform, [stale])
    held.release.set()
    await _wait_status(platform, ours, "sent", "delivered", "failed")
    after = await _message(platform, ours)  # read after the early receipt is gone
    assert (after["status"], after["channel"]) == ("sent", "wechat")
    notes = [e for e in after["events"] if e["type"] == "earlier_attempt_receipt"]
    assert [n["detail"]["provider_message_id"] for n in notes] == ["first-try"]
