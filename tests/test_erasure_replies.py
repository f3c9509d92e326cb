"""Erasure of a customer's inbound replies: those from every number or openid that was theirs
when the reply came (also one they no longer have, never sent to), not those of another
customer, and (PostgreSQL) those arriving while the erasure runs."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from app.customers import erasure
from app.messages.models import InboundCustomer, InboundMessage
from tests.conftest import Platform
from tests.test_customers import _reply, put, reporting_sms, sms_reply


async def _replies(platform: Platform) -> list[tuple[str, str, bool]]:
    """(sender, text, opt_out) of every stored reply."""
    async with platform.runtime.sessionmaker() as session:
        rows = (await session.scalars(select(InboundMessage))).all()
    return sorted((r.sender, r.text, r.opt_out) for r in rows)


async def _linked(platform: Platform) -> list[str]:
    """The customers the stored replies are linked to, once per link."""
    async with platform.runtime.sessionmaker() as session:
        return sorted((await session.scalars(select(InboundCustomer.customer_id))).all())


async def wechat_reply(platform: Platform, openid: str, text: str) -> None:
    await _reply(platform, "wechat", openid, text)


async def _erase(platform: Platform, customer_id: str) -> dict[str, object]:
    async with platform.client("system") as client:
        erased = await client.delete(f"/v1/customers/{customer_id}")
    assert erased.status_code == 200, erased.text
    result: dict[str, object] = erased.json()
    return result


async def test_erasure_takes_the_replies_from_a_number_the_customer_had_then(
    platform: Platform,
) -> None:
    """Replies from the customer's number, which no message ever went to, stay theirs after
    the profile's number changes: the erasure takes them (it used to look only at the
    profile's number now and at the numbers messages went to, and left them with the
    number and text). The opt-out stays as a suppression record."""
    reporting_sms(platform)
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    await sms_reply(platform, "+86 138 0000 0001", "我是张伟，卡号6222021234567890")
    await sms_reply(platform, "13800000001", "TD")
    assert (await put(platform, "C1", {"phone": "13900000001"})).status_code == 200
    erased = await _erase(platform, "C1")
    assert (erased["inbound_replies_erased"], erased["opt_outs_kept"]) == (1, 1)
    assert await _replies(platform) == [("13800000001", "", True)]


async def test_erasure_takes_the_wechat_replies_from_an_openid_the_customer_had_then(
    platform: Platform,
) -> None:
    """The same for an openid: the profile's openid changed, the reply from the former one
    (which no message went to) goes."""
    former, latest = "oFormer000000000000000000001", "oLatest000000000000000000001"
    assert (await put(platform, "C1", {"wechat_openid": former})).status_code == 201
    await wechat_reply(platform, former, "我是张伟，身份证110101199001011234")
    assert (await put(platform, "C1", {"wechat_openid": latest})).status_code == 200
    assert (await _erase(platform, "C1"))["inbound_replies_erased"] == 1
    assert await _replies(platform) == []


async def test_erasure_takes_the_replies_of_a_number_recycled_to_another_customer(
    platform: Platform,
) -> None:
    """The number went to another customer after the erased one left it (carriers recycle
    numbers): the replies from the time it was the erased customer's are theirs, and go."""
    reporting_sms(platform)
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    await sms_reply(platform, "13800000001", "我是张伟")
    assert (await put(platform, "C1", {"phone": "13900000001"})).status_code == 200
    assert (await put(platform, "C3", {"phone": "13800000001"})).status_code == 201
    await sms_reply(platform, "13800000001", "我是王芳")
    assert (await _erase(platform, "C1"))["inbound_replies_erased"] == 1
    assert await _replies(platform) == [("13800000001", "我是王芳", False)]


async def test_erasure_keeps_the_replies_of_whoever_had_the_number_when_they_came(
    platform: Platform,
) -> None:
    """A number the erased customer has now but another customer had when its replies came:
    those replies are the other customer's and stay (they used to go with the erasure)."""
    reporting_sms(platform)
    assert (await put(platform, "C2", {"phone": "13800000001"})).status_code == 201
    await sms_reply(platform, "13800000001", "我是王芳")
    assert (await put(platform, "C2", {"phone": "13900000002"})).status_code == 200
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    await sms_reply(platform, "8613800000001", "我是张伟")
    assert (await _erase(platform, "C1"))["inbound_replies_erased"] == 1
    assert await _replies(platform) == [("13800000001", "我是王芳", False)]
    assert (await _erase(platform, "C2"))["inbound_replies_erased"] == 1
    assert await _replies(platform) == []


async def test_a_reply_from_a_shared_number_stays_until_its_last_customer_is_erased(
    platform: Platform,
) -> None:
    """Two customers with one number (a family phone, joint account holders): a reply from
    it may be either's, and erasing one must not erase the other's data, so it stays whole
    until the erasure of the last of them (a bank keeps what it cannot tell is not its
    remaining customer's)."""
    reporting_sms(platform)
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    assert (await put(platform, "C2", {"phone": "+8613800000001"})).status_code == 201
    await sms_reply(platform, "13800000001", "请寄账单到新地址")
    await sms_reply(platform, "13800000001", "退订")
    assert await _erase(platform, "C1") == {
        "customer_id": "C1",
        "profile_erased": True,
        "messages_anonymized": 0,
        "messages_cancelled": 0,
        "inbound_replies_erased": 0,
        "opt_outs_kept": 0,
    }
    assert await _replies(platform) == [
        ("13800000001", "请寄账单到新地址", False),
        ("13800000001", "退订", True),
    ]
    assert await _linked(platform) == ["C2", "C2"]  # nothing says C1 sent them any more
    # C2 moves to another number: the replies from the time they shared it are still theirs
    assert (await put(platform, "C2", {"phone": "13900000002"})).status_code == 200
    erased = await _erase(platform, "C2")
    assert (erased["inbound_replies_erased"], erased["opt_outs_kept"]) == (1, 1)
    assert await _replies(platform) == [("13800000001", "", True)]
    assert await _linked(platform) == []


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_reply_arriving_while_the_erasure_runs_goes_with_it(platform: Platform) -> None:
    """Replies that come after the erasure took the customer's replies, before it commits:
    they are stored as the erasure leaves replies (an opt-out as a suppression record, the
    rest not at all), at once (an opt-out used to wait for the erasure's end and then fail
    on the deleted profile; the others stayed with the number and text). A reply from the
    number of another customer, not being erased, is theirs and stays."""
    reporting_sms(platform)
    runtime = platform.runtime
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    assert (await put(platform, "C2", {"phone": "13800000002"})).status_code == 201
    async with runtime.sessionmaker() as eraser:
        await erasure.begin(eraser, "C1")
        await eraser.commit()
        await erasure.erase(eraser, "C1")
        replies = asyncio.gather(
            sms_reply(platform, "13800000001", "我是张伟"),
            sms_reply(platform, "+8613800000001", "TD"),
            sms_reply(platform, "13800000002", "我是王芳"),
        )
        done, _ = await asyncio.wait({replies}, timeout=5)
        await eraser.commit()
        await asyncio.wait_for(replies, 30)
    assert done, "the replies waited for the erasure"
    assert await _replies(platform) == [
        ("13800000001", "", True),
        ("13800000002", "我是王芳", False),
    ]
    assert await _linked(platform) == ["C2"]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_erasures_at_once_of_the_customers_of_a_shared_number_take_its_reply(
    platform: Platform,
) -> None:
    """Joint holders both erased at once (or by a bulk erasure in parallel): each would see
    the other's profile, deleted but not committed, and keep the reply for them; both would
    commit and the reply outlive every customer it could be. The second decides after the
    first commits, and takes it."""
    reporting_sms(platform)
    assert (await put(platform, "C1", {"phone": "13800000001"})).status_code == 201
    assert (await put(platform, "C2", {"phone": "+8613800000001"})).status_code == 201
    await sms_reply(platform, "13800000001", "我是张伟，请寄账单到新地址")
    sessionmaker = platform.runtime.sessionmaker
    async with sessionmaker() as one, sessionmaker() as two:
        for session, customer in ((one, "C1"), (two, "C2")):
            await erasure.begin(session, customer)
            await session.commit()
        first = await erasure.erase(one, "C1")
        second = asyncio.ensure_future(erasure.erase(two, "C2"))
        done, _ = await asyncio.wait({second}, timeout=1)
        assert not done, "the second erasure decided before the first committed"
        await one.commit()
        result = await asyncio.wait_for(second, 10)
        await two.commit()
    assert (first.inbound_replies_erased, result.inbound_replies_erased) == (0, 1)
    assert await _replies(platform) == []
    assert await _linked(platform) == []
