"""Erasure of a customer against sends of theirs in flight: a message a worker is sending
keeps its outcome, and (PostgreSQL) a send still being accepted is erased once it commits,
not left behind with the customer's data."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks import repository as callbacks_repository
from app.callbacks import service as callbacks_service
from app.customers import erasure
from app.customers import repository as customers_repository
from app.customers.models import CustomerErasure
from app.messages import repository as messages_repository
from app.messages.models import Message
from app.messages.schemas import MessageCreate
from app.messages.service import AcceptRequest, accept_many
from app.runtime import Runtime
from app.sandbox import repository as sandbox_repository
from app.timeutil import utcnow
from tests.conftest import VARIABLES, Platform
from tests.test_early_receipts import (
    CONTACTS,
    _callback,
    _early_count,
    _held_send,
    _message,
    _wait_status,
)


async def test_a_message_being_sent_at_the_erasure_keeps_its_outcome(platform: Platform) -> None:
    """The worker holds the message (its send is with the provider) when the customer is
    erased: it is not cancelled, and the send's outcome is recorded, without the data."""
    held, message_id, provider_id = await _held_send(platform)
    async with platform.client("system") as client:
        erased = await client.delete("/v1/customers/C1")
    assert erased.status_code == 200, erased.text
    assert erased.json()["messages_anonymized"] == 1
    assert erased.json()["messages_cancelled"] == 0
    held.release.set()
    message = await platform.wait_terminal(message_id)
    assert message["status"] in ("sent", "delivered"), message
    assert message["provider"] == held.account
    assert message["provider_message_id"] == provider_id
    assert message["customer_id"].startswith("anon_")
    assert message["recipient"] == {}
    assert message["content"] == {}
    assert "failed" not in [e["type"] for e in message["events"]]


async def _send_later(platform: Platform) -> str:
    """Another message of customer C1, scheduled far ahead: its id."""
    later = {
        "scenario": "account_movement",
        "customer_id": "C1",
        "variables": VARIABLES,
        "recipient": CONTACTS,
        "send_at": "2099-01-01T00:00:00+08:00",
    }
    async with platform.client("system") as client:
        response = await client.post("/v1/messages", json=later)
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


async def test_an_erasure_drops_the_receipts_waiting_for_sends_that_will_not_happen(
    platform: Platform,
) -> None:
    """A receipt that came early for a message the erasure cancels is dropped with it; one
    for the message being sent stays and gives it its delivery status, with the provider's
    text masked (an erasure cannot reach what is written after it)."""
    held, sending, theirs = await _held_send(platform)
    scheduled = await _send_later(platform)
    text = "user 13800001234 (li.wei@bank.example) reached"
    await _callback(
        platform,
        [
            {"delivered": True, "provider_message_id": theirs, "code": "ok", "detail": text},
            {"delivered": True, "message_id": scheduled, "code": "ok", "detail": text},
        ],
    )
    assert await _early_count(platform) == 2
    async with platform.client("system") as client:
        erased = (await client.delete("/v1/customers/C1")).json()
    assert (erased["messages_anonymized"], erased["messages_cancelled"]) == (2, 1)
    assert await _early_count(platform) == 1
    held.release.set()
    message = await _wait_status(platform, sending, "delivered")
    delivered = next(e for e in message["events"] if e["type"] == "delivered")
    assert delivered["detail"]["detail"] == "user 138****1234 (l***@bank.example) reached"
    assert (await _message(platform, scheduled))["status"] == "failed"


def _request(customer_id: str, phone: str) -> AcceptRequest:
    body = {
        "scenario": "account_movement",
        "customer_id": customer_id,
        "variables": VARIABLES,
        "recipient": {"phone": phone},
    }
    return AcceptRequest("account_movement", "core", MessageCreate.model_validate(body), None)


async def _accept(session: AsyncSession, runtime: Runtime, requests: list[AcceptRequest]) -> Any:
    return await accept_many(session, requests, queue=runtime.queue, settings=runtime.settings)


async def _erase(runtime: Runtime, customer_id: str) -> int:
    """Erase as the API does (its marker committed first); how many messages it anonymized."""
    async with runtime.sessionmaker() as session:
        await erasure.begin(session, customer_id)
        await session.commit()
        result = await erasure.erase(session, customer_id)
        await session.commit()
    return result.messages_anonymized


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_waits_for_a_send_being_accepted(platform: Platform) -> None:
    """A send of the customer accepted but not committed yet: the erasure waits for it,
    then erases it too (it used to miss it: the message kept the phone and was sent)."""
    await platform.create_scenario()
    runtime = platform.runtime
    async with runtime.sessionmaker() as accepting:
        (accepted,) = await _accept(accepting, runtime, [_request("C7", "13800007777")])
        erasing = asyncio.create_task(_erase(runtime, "C7"))
        await asyncio.sleep(0.5)
        assert not erasing.done(), "the erasure waits for the accept to commit"
        await accepting.commit()
    assert await asyncio.wait_for(erasing, 10) == 1
    async with runtime.sessionmaker() as session:
        message = await session.get(Message, accepted.message.id)
    assert message is not None
    assert message.recipient == {}
    assert message.status == "failed"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_waiting_for_a_send_does_not_hold_up_other_sends(
    platform: Platform,
) -> None:
    """While an erasure waits for an uncommitted send of its customer, a batch for other
    customers (covering every bucket) goes through: the erasure does not queue for the lock,
    which would make every new accept wait behind it."""
    await platform.create_scenario()
    runtime = platform.runtime

    async def others() -> None:
        async with runtime.sessionmaker() as session:
            await _accept(session, runtime, [_request(f"X{i}", f"139{i:08d}") for i in range(300)])
            await session.commit()

    async with runtime.sessionmaker() as accepting:
        await _accept(accepting, runtime, [_request("C8", "13800008888")])
        erasing = asyncio.create_task(_erase(runtime, "C8"))
        await asyncio.sleep(0.3)
        await asyncio.wait_for(others(), 5)  # not behind the erasure
        assert not erasing.done()
        await accepting.commit()
    assert await asyncio.wait_for(erasing, 10) == 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_that_finds_no_gap_queues_for_its_bucket(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its patience the erasure stops trying and waits in line: it still runs once the
    send commits, and erases it."""
    monkeypatch.setattr(customers_repository, "ERASURE_LOCK_PATIENCE", 0.2)
    await platform.create_scenario()
    runtime = platform.runtime
    async with runtime.sessionmaker() as accepting:
        await _accept(accepting, runtime, [_request("C9", "13800009999")])
        erasing = asyncio.create_task(_erase(runtime, "C9"))
        await asyncio.sleep(0.6)  # past the patience: queued
        assert not erasing.done()
        await accepting.commit()
    assert await asyncio.wait_for(erasing, 10) == 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_beside_the_sweeper_applying_a_receipt(platform: Platform) -> None:
    """The sweeper locks an early receipt, then its message; an erasure locks the
    customer's messages, then drops receipts: neither waits for the other's first lock
    (no deadlock), and the sent message's receipt is applied, not dropped."""
    runtime = platform.runtime
    sweeper_task = runtime._sweeper  # this test is the sweeper: the runtime's would race it
    assert sweeper_task is not None
    sweeper_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper_task
    runtime._sweeper = None
    held, _, _ = await _held_send(platform)
    sent = await _send_later(platform)
    await _callback(platform, [{"delivered": True, "message_id": sent, "code": "ok"}])
    async with runtime.sessionmaker() as session:  # its send recorded, the receipt waiting
        await session.execute(
            update(Message)
            .where(Message.id == sent)
            .values(status="sent", channel="wechat", provider="reporting-wechat")
        )
        await session.commit()
    async with runtime.sessionmaker() as sweeper, runtime.sessionmaker() as eraser:
        ready = await callbacks_repository.early_ready(sweeper, limit=10)
        assert [r.message_id for r in ready] == [sent]

        async def erase() -> None:
            await erasure.begin(eraser, "C1")
            await eraser.commit()
            await erasure.erase(eraser, "C1")
            await eraser.commit()

        erasing = asyncio.create_task(erase())
        await _until_held(platform, sent, erasing)
        applying = asyncio.create_task(callbacks_repository.lock_receipt_messages(sweeper, ready))
        await asyncio.wait_for(erasing, 10)
        await asyncio.wait_for(applying, 10)
        await sweeper.commit()
    held.release.set()
    assert await _early_count(platform) == 1  # left for the sweeper to apply
    async with runtime.sessionmaker() as session:
        now = utcnow()
        expired = now - timedelta(hours=24)
        await callbacks_service.apply_early(session, now=now, expire_before=expired, limit=10)
        await session.commit()
    assert await _early_count(platform) == 0
    assert (await _message(platform, sent))["status"] == "delivered"


async def _until_held(platform: Platform, message_id: str, erasing: asyncio.Task[None]) -> None:
    """Until the erasure holds the message's row (a NOWAIT probe of it fails) or is over. A
    fixed half second was too short on a loaded machine: the sweeper then locked the message
    first, and the erasure waited for a transaction this test commits only after it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    probe_row = select(Message.id).where(Message.id == message_id).with_for_update(nowait=True)
    while not erasing.done():
        async with platform.runtime.sessionmaker() as probe:
            try:
                await probe.execute(probe_row)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                return
            finally:
                await probe.rollback()
        assert loop.time() < deadline, "the erasure never held the message"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_sends_to_a_customer_being_erased_are_refused_until_it_is_done(
    platform: Platform,
) -> None:
    """Between the erasure's marker and its end, a send of the customer gets a 409 (a batch
    item too, beside its accepted neighbour); once erased, the customer may be sent to."""
    await platform.create_scenario()
    runtime = platform.runtime
    body = {"customer_id": "C5", "variables": VARIABLES, "recipient": {"phone": "13800005555"}}
    async with runtime.sessionmaker() as eraser:
        await erasure.begin(eraser, "C5")
        await eraser.commit()
        async with platform.client("system") as client:
            refused = await client.post(
                "/v1/messages", json={"scenario": "account_movement", **body}
            )
            assert refused.status_code == 409, refused.text
            assert "being erased" in refused.json()["detail"]
            other = {**body, "customer_id": "C6", "recipient": {"phone": "13800006666"}}
            batch = await client.post(
                "/v1/messages/batch", json={"scenario": "account_movement", "items": [body, other]}
            )
            assert batch.status_code == 202, batch.text
            first, second = batch.json()["items"]
            assert first["error"] == "Conflict"
            assert first["id"] is None
            assert second["id"] is not None
        await erasure.erase(eraser, "C5")
        await eraser.commit()
    async with platform.client("system") as client:
        again = await client.post("/v1/messages", json={"scenario": "account_movement", **body})
        assert again.status_code == 202, again.text


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_under_way_holds_up_no_other_sends(platform: Platform) -> None:
    """The erasure's long transaction holds no bucket: a batch for other customers (covering
    every bucket) is accepted while it is open (it used to wait for its end)."""
    await platform.create_scenario()
    runtime = platform.runtime
    async with runtime.sessionmaker() as session:
        await _accept(session, runtime, [_request("C4", "13800004444")])
        await session.commit()
    async with runtime.sessionmaker() as eraser:
        await erasure.begin(eraser, "C4")
        await eraser.commit()
        assert (await erasure.erase(eraser, "C4")).messages_anonymized == 1
        async with runtime.sessionmaker() as session:  # the erasure not committed yet
            requests = [_request(f"Y{i}", f"139{i:08d}") for i in range(300)]
            outcomes = await asyncio.wait_for(_accept(session, runtime, requests), 5)
            await session.commit()
        assert all(hasattr(o, "message") for o in outcomes)
        await eraser.commit()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_the_marker_of_an_erasure_that_died_expires(platform: Platform) -> None:
    await platform.create_scenario()
    runtime = platform.runtime
    async with runtime.sessionmaker() as eraser:
        await erasure.begin(eraser, "C3")
        await eraser.commit()
    async with runtime.sessionmaker() as session:
        (refused,) = await _accept(session, runtime, [_request("C3", "13800003333")])
        assert "being erased" in str(refused)
        await session.execute(
            update(CustomerErasure).values(
                started_at=utcnow() - customers_repository.ERASURE_MARKER_TTL - timedelta(seconds=1)
            )
        )
        (accepted,) = await _accept(session, runtime, [_request("C3", "13800003333")])
        await session.commit()
    assert accepted.message.id


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_outlasting_its_markers_lifetime_still_refuses_sends(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure that runs longer than its marker's lifetime (a huge history, a slow
    database) keeps the marker alive: a send of the customer after its messages were erased
    is refused. (The marker used to lapse: the send was accepted, and its message, with the
    customer's number, outlived the erasure.)"""
    await platform.create_scenario()
    monkeypatch.setattr(customers_repository, "ERASURE_MARKER_TTL", timedelta(seconds=1))
    scrub = messages_repository.scrub_reasons

    async def slowly(*args: Any, **kwargs: Any) -> None:  # after the messages are erased
        await asyncio.sleep(3)
        await scrub(*args, **kwargs)

    monkeypatch.setattr(messages_repository, "scrub_reasons", slowly)
    body = {"scenario": "account_movement", "customer_id": "C5", "variables": VARIABLES}
    body["recipient"] = {"phone": "13800005555"}
    async with platform.client("system") as client:
        erasing = asyncio.create_task(client.delete("/v1/customers/C5"))
        await asyncio.sleep(2)  # the marker's lifetime is over, the erasure still runs
        during = await client.post("/v1/messages", json=body)
        erased = await erasing
    assert erased.status_code == 200, erased.text
    async with platform.runtime.sessionmaker() as session:
        kept = (await session.scalars(select(Message).where(Message.customer_id == "C5"))).all()
        markers = (await session.scalars(select(CustomerErasure))).all()
    assert (during.status_code, kept, markers) == (409, [], []), during.text


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_send_waiting_for_the_erasures_lock_sees_its_marker(platform: Platform) -> None:
    """The marker is read by a statement of its own after the locks: a send that waited for
    the erasure's bucket sees the marker committed meanwhile, and is refused."""
    await platform.create_scenario()
    runtime = platform.runtime
    async with runtime.sessionmaker() as eraser:
        await erasure.begin(eraser, "C5")  # holds the bucket

        async def accept() -> Any:
            async with runtime.sessionmaker() as session:
                outcomes = await _accept(session, runtime, [_request("C5", "13800005555")])
                await session.commit()
                return outcomes

        accepting = asyncio.create_task(accept())
        await asyncio.sleep(0.5)
        assert not accepting.done()
        await eraser.commit()
        (outcome,) = await asyncio.wait_for(accepting, 5)
    assert "being erased" in str(outcome)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_that_fails_serves_its_customer_again(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    await platform.create_scenario()

    async def fails(*_: Any, **__: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(sandbox_repository, "erase_for_customer", fails)
    body = {"scenario": "account_movement", "customer_id": "C5", "variables": VARIABLES}
    body["recipient"] = {"phone": "13800005555"}
    async with platform.client("system") as client:
        with contextlib.suppress(RuntimeError):  # raised through the test transport
            await client.delete("/v1/customers/C5")
        monkeypatch.undo()
        assert (await client.post("/v1/messages", json=body)).status_code == 202
        assert (await client.delete("/v1/customers/" + "C" * 65)).status_code == 422
