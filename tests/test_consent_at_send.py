"""Marketing consent checked again when a message goes (app/messages/consent_check.py): a
customer who opts out between acceptance and sending gets no marketing message on that
channel (it falls back, or fails) and their notice goes without its marketing patch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.messages import consent_check
from app.messages.models import Message
from app.sandbox.models import SandboxDelivery
from tests.conftest import VARIABLES, Platform
from tests.test_customers import put, reporting_sms, sms_reply
from tests.test_strategies_api import _outside_quiet_hours, _setup


@pytest.fixture(autouse=True)
def recheck_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """These messages go within seconds of acceptance: check them again all the same."""
    monkeypatch.setattr(consent_check, "RECHECK_AFTER", 0.0)


def _soon() -> str:
    return (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()


async def _sandboxed(platform: Platform, message_id: str) -> list[SandboxDelivery]:
    async with platform.runtime.sessionmaker() as session:
        query = select(SandboxDelivery).where(SandboxDelivery.message_id == message_id)
        return list((await session.scalars(query)).all())


async def _accept(platform: Platform, body: dict[str, Any]) -> str:
    async with platform.client("system") as client:
        accepted = await client.post("/v1/messages", json=body)
    assert accepted.status_code == 202, accepted.text
    message_id: str = accepted.json()["id"]
    return message_id


async def test_a_scheduled_marketing_message_is_not_sent_after_an_opt_out(
    platform: Platform,
) -> None:
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    body = {"scenario": "wealth_offer", "customer_id": "C1", "variables": VARIABLES}
    message_id = await _accept(platform, {**body, "channels": ["sms"], "send_at": _soon()})
    async with platform.client("system") as client:
        out = await client.post("/v1/customers/C1/opt-out", json={"channel": "sms"})
        assert out.status_code == 200
    final = await platform.wait_terminal(message_id)
    assert final["status"] == "failed"
    assert "opted out of marketing on sms" in final["status_reason"]
    failed = next(e for e in final["events"] if e["type"] == "attempt_failed")
    assert failed["detail"]["code"] == "opted_out"
    assert await _sandboxed(platform, message_id) == []


async def test_an_opt_out_reply_sends_a_marketing_message_by_the_next_channel(
    platform: Platform,
) -> None:
    reporting_sms(platform)
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    profile = {"phone": "13800000002", "email": "li.na@example.com"}
    assert (await put(platform, "C2", profile)).status_code == 201
    body = {"scenario": "wealth_offer", "customer_id": "C2", "variables": VARIABLES}
    message_id = await _accept(platform, {**body, "channels": ["sms", "email"], "send_at": _soon()})
    await sms_reply(platform, "+86 138 0000 0002", "退订")
    final = await platform.wait_terminal(message_id)
    assert final["status"] in ("sent", "delivered")
    assert final["channel"] == "email"
    assert [d.channel for d in await _sandboxed(platform, message_id)] == ["email"]


async def test_a_notice_goes_without_its_patch_after_an_opt_out(platform: Platform) -> None:
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)  # R1 gets the wealth patch by SMS
    body = {"scenario": "account_movement", "customer_id": "R1", "variables": VARIABLES}
    message_id = await _accept(platform, {**body, "send_at": _soon()})
    async with platform.client("system") as client:
        accepted = (await client.get(f"/v1/messages/{message_id}")).json()
        assert accepted["decision"]["strategy"] == "wealth"
        out = await client.post("/v1/customers/R1/opt-out", json={"channel": "sms"})
        assert out.status_code == 200
    final = await platform.wait_terminal(message_id)
    assert final["status"] in ("sent", "delivered")
    (sent,) = await _sandboxed(platform, message_id)
    assert "稳健理财" not in sent.content["body"]
    assert sent.content["body"].startswith("【示例银行】您尾号1234的账户支出1200.00元")
    dropped = next(e for e in final["events"] if e["type"] == "patch_dropped")
    assert dropped["detail"]["channel"] == "sms"


async def test_a_notice_keeps_its_patch_while_consent_holds(platform: Platform) -> None:
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
    body = {"scenario": "account_movement", "customer_id": "R1", "variables": VARIABLES}
    message_id = await _accept(platform, {**body, "send_at": _soon()})
    final = await platform.wait_terminal(message_id)
    (sent,) = await _sandboxed(platform, message_id)
    assert "稳健理财" in sent.content["body"]
    assert all(e["type"] != "patch_dropped" for e in final["events"])
    async with platform.runtime.sessionmaker() as session:  # the copy without the patch...
        assert (await session.get(Message, message_id)).unpatched  # type: ignore[union-attr]
    async with platform.client("system") as client:
        assert (await client.delete("/v1/customers/R1")).status_code == 200
    async with platform.runtime.sessionmaker() as session:  # ...is personal data too
        assert (await session.get(Message, message_id)).unpatched is None  # type: ignore[union-attr]


async def test_a_message_accepted_moments_ago_is_not_checked_again(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided on consent seconds old: it goes as decided (and costs no lookup)."""
    monkeypatch.setattr(consent_check, "RECHECK_AFTER", 60.0)

    async def no_lookup(*_: Any, **__: Any) -> None:
        raise AssertionError("a fresh message is not checked again")

    monkeypatch.setattr(consent_check, "_changed", no_lookup)
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    body = {"scenario": "wealth_offer", "customer_id": "C1", "variables": VARIABLES}
    message_id = await _accept(platform, {**body, "channels": ["sms"], "send_at": _soon()})
    async with platform.client("system") as client:
        assert (await client.post("/v1/customers/C1/opt-out", json={"channel": "sms"})).is_success
    assert (await platform.wait_terminal(message_id))["status"] in ("sent", "delivered")


async def test_a_check_that_fails_puts_the_send_off(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consent cannot be read: the marketing message waits and tries again (it is not sent
    unchecked), and the next check finds the opt-out."""
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    changed = consent_check._changed
    calls = []

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the read database went away")
        return await changed(*args, **kwargs)

    monkeypatch.setattr(consent_check, "_changed", fails_once)
    body = {"scenario": "wealth_offer", "customer_id": "C1", "variables": VARIABLES}
    message_id = await _accept(platform, {**body, "channels": ["sms"], "send_at": _soon()})
    async with platform.client("system") as client:
        assert (await client.post("/v1/customers/C1/opt-out", json={"channel": "sms"})).is_success
    final = await platform.wait_terminal(message_id)
    codes = [e["detail"]["code"] for e in final["events"] if e["type"] == "attempt_failed"]
    assert codes == ["consent_check", "opted_out"]
    assert final["status"] == "failed"
    assert await _sandboxed(platform, message_id) == []
