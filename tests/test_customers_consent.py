"""Consent per channel and purpose: defaults, opt-out/opt-in, and the SMS "TD" reply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.customers.consent import Purpose, allows
from app.customers.service import consent_of, opt_out_by_reply
from app.messages.models import InboundMessage
from tests.conftest import VARIABLES, Platform
from tests.test_customers import put, reporting_sms, sms_reply


def _granted(consent: dict[str, Any]) -> dict[tuple[str, str], bool]:
    return {
        (channel, purpose): decision["granted"]
        for channel, purposes in consent.items()
        for purpose, decision in purposes.items()
    }


async def _consent(platform: Platform, customer_id: str) -> dict[str, Any]:
    async with platform.client("analyst") as client:
        response = await client.get(f"/v1/customers/{customer_id}")
    assert response.status_code == 200, response.text
    consent: dict[str, Any] = response.json()["consent"]
    return consent


async def test_defaults_and_opt_out_and_in(platform: Platform) -> None:
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    consent = await _consent(platform, "C1")
    assert all(_granted(consent).values())
    assert consent["sms"]["marketing"] == {"granted": True, "source": "default", "updated_at": None}
    async with platform.client("marketer") as client:
        out = await client.post("/v1/customers/C1/opt-out", json={"channel": "sms"})
        assert out.status_code == 200, out.text
        assert out.json()["sms"]["marketing"]["granted"] is False
        assert out.json()["sms"]["marketing"]["source"] == "api:marketing"
        assert out.json()["sms"]["transactional"]["granted"] is True
        assert out.json()["email"]["marketing"]["granted"] is True
        everywhere = await client.post("/v1/customers/C1/opt-out", json={})
        assert not any(v for (_, p), v in _granted(everywhere.json()).items() if p == "marketing")
        back = await client.post("/v1/customers/C1/opt-in", json={"channel": "email"})
        assert back.json()["email"]["marketing"]["granted"] is True
        assert back.json()["wechat"]["marketing"]["granted"] is False
        # transactional notices: one channel at a time
        refused = await client.post("/v1/customers/C1/opt-out", json={"purpose": "transactional"})
        assert refused.status_code == 422
        assert refused.json()["fields"][0]["field"] == "channel"
        email_off = await client.post(
            "/v1/customers/C1/opt-out", json={"channel": "email", "purpose": "transactional"}
        )
        assert email_off.json()["email"]["transactional"]["granted"] is False
        assert (await client.post("/v1/customers/nobody/opt-out", json={})).status_code == 404
        bad = await client.post("/v1/customers/C1/opt-out", json={"channel": "fax"})
        assert bad.status_code == 422
    async with platform.client("analyst") as client:
        assert (await client.post("/v1/customers/C1/opt-out", json={})).status_code == 403
    # the replacing PUT keeps consent
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 200
    assert (await _consent(platform, "C1"))["sms"]["marketing"]["granted"] is False
    async with platform.runtime.read_sessionmaker() as session:
        state = await consent_of(session, "C1", marketing_granted=True)
    assert not allows(state, "sms", Purpose.marketing)
    assert allows(state, "sms", "transactional")


@pytest.mark.parametrize("text", ["TD", " 退订 ", "t", "R"])
async def test_sms_opt_out_reply_revokes_sms_marketing(platform: Platform, text: str) -> None:
    reporting_sms(platform)
    for customer_id, phone in (("C1", "13800000001"), ("C2", "+8613800000001"), ("C3", "139")):
        body = {"phone": phone if len(phone) > 3 else "13900000003"}
        assert (await put(platform, customer_id, body)).status_code == 201
    await sms_reply(platform, "8613800000001", text)
    for customer_id in ("C1", "C2"):  # both spellings of the number
        consent = await _consent(platform, customer_id)
        assert consent["sms"]["marketing"]["granted"] is False
        assert consent["sms"]["marketing"]["source"] == "sms_reply:reporting-sms"
        assert consent["sms"]["transactional"]["granted"] is True
        assert consent["email"]["marketing"]["granted"] is True
    assert all(_granted(await _consent(platform, "C3")).values())


async def test_an_opt_out_from_an_international_number_reported_without_plus(
    platform: Platform,
) -> None:
    """Providers report some senders without "+" (14155550100 for +1 415 555 0100): the
    customer recorded with the country code is opted out, at once and for later sends, and
    the erasure of that customer keeps the reply as a suppression record."""
    reporting_sms(platform)
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    assert (await put(platform, "C60", {"phone": "+14155550100"})).status_code == 201
    assert (await put(platform, "C61", {"phone": "+14155550199"})).status_code == 201
    await sms_reply(platform, "14155550100", "谢谢")
    await sms_reply(platform, "14155550100", "TD")
    consent = await _consent(platform, "C60")
    assert consent["sms"]["marketing"]["granted"] is False
    assert consent["sms"]["marketing"]["source"] == "sms_reply:reporting-sms"
    assert all(_granted(await _consent(platform, "C61")).values())
    marketing = {"scenario": "wealth_offer", "variables": VARIABLES, "channels": ["sms"]}
    async with platform.client("system") as client:
        # the opt-in of the customer's own record ends it; the inline number stays out
        inline = {**marketing, "customer_id": "X60", "recipient": {"phone": "+14155550100"}}
        refused = await client.post("/v1/messages", json=inline)
        assert refused.status_code == 422, refused.text
        erased = (await client.delete("/v1/customers/C60")).json()
        assert (erased["inbound_replies_erased"], erased["opt_outs_kept"]) == (1, 1)
        assert (await client.post("/v1/messages", json=inline)).status_code == 422
        other = {**marketing, "customer_id": "C61"}
        assert (await client.post("/v1/messages", json=other)).status_code == 202


async def test_reply_that_is_not_an_opt_out_changes_nothing(platform: Platform) -> None:
    reporting_sms(platform)
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    await sms_reply(platform, "13800000001", "谢谢")
    assert all(_granted(await _consent(platform, "C1")).values())


async def test_late_reply_does_not_undo_a_newer_opt_in(platform: Platform) -> None:
    reporting_sms(platform)
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    async with platform.client("system") as client:
        await client.post("/v1/customers/C1/opt-in", json={"channel": "sms"})
    earlier = datetime.now(UTC) - timedelta(hours=1)  # a reply reported an hour late
    async with platform.runtime.sessionmaker() as session:
        changed = await opt_out_by_reply(
            session, [(["C1"], earlier)], channel="sms", source="sms_reply:late"
        )
        await session.commit()
    assert changed == 1
    consent = await _consent(platform, "C1")
    assert consent["sms"]["marketing"]["granted"] is True
    assert consent["sms"]["marketing"]["source"] == "api:core-banking"


async def test_marketing_denied_by_default_when_configured(platform: Platform) -> None:
    settings = platform.runtime.settings
    settings.customers.marketing_consent_default = "denied"
    try:
        assert (await put(platform, "C1", {})).status_code == 201
        granted = _granted(await _consent(platform, "C1"))
    finally:
        settings.customers.marketing_consent_default = "granted"
    assert granted[("sms", "transactional")] is True
    assert granted[("sms", "marketing")] is False


async def test_sends_go_only_to_channels_the_customer_consents_to(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("marketer") as client:
        body = {"phone": "13900000077", "email": "li.na@example.com"}
        assert (await client.put("/v1/customers/C77", json=body)).status_code in (200, 201)
        revoked = await client.post(
            "/v1/customers/C77/opt-out", json={"channel": "sms", "purpose": "transactional"}
        )
        assert revoked.status_code == 200, revoked.text
    send = {
        "scenario": "account_movement",
        "customer_id": "C77",
        "variables": {"account_tail": "1234", "amount": "1200.00"},
    }
    async with platform.client("system") as client:
        accepted = await client.post("/v1/messages", json=send)
        assert accepted.status_code == 202, accepted.text
        message = (await client.get(f"/v1/messages/{accepted.json()['id']}")).json()
        assert message["channels"] == ["email"]
        assert {"channel": "sms", "reason": "no transactional consent"} in message["decision"][
            "skipped_channels"
        ]
    async with platform.client("marketer") as client:
        await client.post(
            "/v1/customers/C77/opt-out", json={"channel": "email", "purpose": "transactional"}
        )
    async with platform.client("system") as client:
        refused = await client.post("/v1/messages", json=send)
        assert refused.status_code == 422
        assert refused.json()["fields"][0]["field"] == "customer_id"


async def test_an_opt_out_survives_the_erasure_of_the_customer(platform: Platform) -> None:
    """Erasure removes the customer's replies, except that an opt-out stays as a suppression
    record (the number's key and the time, not the text or the number as typed): the number
    is not marketable again when a business system sends to it inline afterwards, or when a
    new profile gets it."""
    reporting_sms(platform)
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    assert (await put(platform, "C50", {"phone": "13800000050"})).status_code == 201
    await sms_reply(platform, "+86 138 0000 0050", "退订")
    await sms_reply(platform, "+8613800000050", "你们的理财收益率多少")
    async with platform.client("system") as client:
        erased = (await client.delete("/v1/customers/C50")).json()
        assert erased["inbound_replies_erased"] == 1
        assert erased["opt_outs_kept"] == 1
        inline = {
            "scenario": "wealth_offer",
            "customer_id": "X50",
            "variables": VARIABLES,
            "recipient": {"phone": "13800000050"},
            "channels": ["sms"],
        }
        refused = await client.post("/v1/messages", json=inline)
        assert refused.status_code == 422, refused.text
        assert "no marketing messages on sms" in refused.json()["fields"][0]["message"]
    assert (await put(platform, "C51", {"phone": "13800000050"})).status_code == 201
    shown = (await _consent(platform, "C51"))["sms"]["marketing"]
    assert (shown["granted"], shown["source"]) == (False, "sms_reply")
    async with platform.runtime.sessionmaker() as session:
        rows = (await session.scalars(select(InboundMessage))).all()
    assert [(r.sender, r.sender_key, r.text, r.opt_out) for r in rows] == [
        ("13800000050", "13800000050", "", True)
    ]


async def test_an_opted_out_number_stays_opted_out_for_whoever_has_it(platform: Platform) -> None:
    """A "TD" from a number the platform does not know yet still counts: for a recipient
    given inline and for a customer recorded with that number afterwards, until they opt
    in again. Transactional notices are not affected."""
    reporting_sms(platform)
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    await platform.create_scenario()
    await sms_reply(platform, "+8613800000042", "TD")  # nobody has this number yet

    def send(scenario: str, customer_id: str, **extra: Any) -> dict[str, Any]:
        return {"scenario": scenario, "customer_id": customer_id, "variables": VARIABLES, **extra}

    inline = send("wealth_offer", "X1", recipient={"phone": "13800000042"}, channels=["sms"])
    other = send("wealth_offer", "X2", recipient={"phone": "13800000043"}, channels=["sms"])
    async with platform.client("system") as client:
        refused = await client.post("/v1/messages", json=inline)
        assert refused.status_code == 422, refused.text
        assert "no marketing messages on sms" in refused.json()["fields"][0]["message"]
        assert (await client.post("/v1/messages", json=other)).status_code == 202
    # a customer recorded later with the number: marketing by SMS refused, email still goes
    body = {"phone": "13800000042", "email": "wang.fang@example.com"}
    assert (await put(platform, "C42", body)).status_code == 201
    shown = (await _consent(platform, "C42"))["sms"]["marketing"]  # as sends count it
    assert (shown["granted"], shown["source"]) == (False, "sms_reply")
    async with platform.client("system") as client:
        accepted = await client.post("/v1/messages", json=send("wealth_offer", "C42"))
        assert accepted.status_code == 202, accepted.text
        message = (await client.get(f"/v1/messages/{accepted.json()['id']}")).json()
        assert "sms" not in message["channels"]
        assert {"channel": "sms", "reason": "no marketing consent"} in message["decision"][
            "skipped_channels"
        ]
        notice = await client.post(
            "/v1/messages", json=send("account_movement", "C42", channels=["sms"])
        )
        assert notice.status_code == 202, notice.text
        # the customer opts in again after the reply: that decision is newer and wins
        opted_in = await client.post("/v1/customers/C42/opt-in", json={"channel": "sms"})
        assert opted_in.json()["sms"]["marketing"]["granted"] is True
        again = await client.post("/v1/messages", json=send("wealth_offer", "C42"))
        assert again.status_code == 202, again.text
        message = (await client.get(f"/v1/messages/{again.json()['id']}")).json()
        assert "sms" in message["channels"]
        # that opt-in speaks for C42's own number, not for another opted-out one given inline
        assert (await put(platform, "C43", {"phone": "13900000043"})).status_code == 201
        assert (await client.post("/v1/customers/C43/opt-in", json={"channel": "sms"})).is_success
        elsewhere = send("wealth_offer", "C43", recipient={"phone": "13800000042"})
        refused = await client.post("/v1/messages", json=elsewhere)
        assert refused.status_code == 422, refused.text
        # one customer id, two numbers in one batch: only the opted-out one is refused
        batch = await client.post(
            "/v1/messages/batch",
            json={
                "scenario": "wealth_offer",
                "items": [
                    {"customer_id": "X3", "variables": VARIABLES, "channels": ["sms"], **r}
                    for r in ({"recipient": {"phone": p}} for p in ("13800000042", "13800000044"))
                ],
            },
        )
        assert batch.status_code == 202, batch.text
        assert (batch.json()["accepted"], batch.json()["rejected"]) == (1, 1)
        first, second = batch.json()["items"]
        assert "no marketing messages on sms" in first["detail"]
        assert second["error"] is None
        assert second["status"] == "queued"


async def test_erasure_tells_a_mainland_number_from_a_plus_1_number(platform: Platform) -> None:
    """13105550100 is a mainland number and, reported without "+", +1 310 555 0100 too: an
    erasure removes the replies under a spelling unless another customer has that number."""
    reporting_sms(platform)
    assert (await put(platform, "CN", {"phone": "13105550100"})).status_code == 201
    assert (await put(platform, "US", {"phone": "+13105550100"})).status_code == 201
    await sms_reply(platform, "13105550100", "你好")  # the mainland number, or +1 without "+"
    await sms_reply(platform, "+13105550100", "hello")  # the +1 number
    async with platform.client("system") as client:
        # the bare reply may be the mainland customer's: kept; the "+1" one goes
        erased = (await client.delete("/v1/customers/US")).json()
        assert erased["inbound_replies_erased"] == 1
        # no one else has the mainland number now: its replies go
        erased = (await client.delete("/v1/customers/CN")).json()
        assert erased["inbound_replies_erased"] == 1
    async with platform.runtime.sessionmaker() as session:
        assert (await session.scalars(select(InboundMessage))).all() == []


async def test_a_number_stored_without_plus_is_opted_out_by_a_reply_with_it(
    platform: Platform,
) -> None:
    """Stored as Aliyun writes international numbers (85291234567), replied to as Tencent
    reports them (+85291234567): the customer is opted out, and a send to the bare number
    finds the reply too."""
    reporting_sms(platform)
    await platform.create_scenario(key="wealth_offer", **{"class": "marketing"})
    assert (await put(platform, "HK1", {"phone": "85291234567"})).status_code == 201
    await sms_reply(platform, "+85291234567", "TD")
    assert (await _consent(platform, "HK1"))["sms"]["marketing"]["granted"] is False
    marketing = {"scenario": "wealth_offer", "variables": VARIABLES, "channels": ["sms"]}
    async with platform.client("system") as client:
        stored = await client.post("/v1/messages", json={**marketing, "customer_id": "HK1"})
        assert stored.status_code == 422, stored.text
        inline = {**marketing, "customer_id": "X1", "recipient": {"phone": "85291234567"}}
        assert (await client.post("/v1/messages", json=inline)).status_code == 422
