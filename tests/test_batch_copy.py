"""Batches written in bulk: COPY on PostgreSQL (app/messages/bulk_pg.py), executemany on SQLite.

The ``copy_everything`` fixture lowers the COPY threshold to one row, so that small batches take
the PostgreSQL COPY path; on SQLite the same tests check the executemany path. Idempotency must
behave the same on both: replays, conflicts, repeats inside a batch, concurrent batches.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text

from app.db import commit
from app.ids import new_id, new_ids
from app.messages import bulk_pg, repository
from app.messages.gcpause import collector_paused
from app.messages.models import Message, Outbox
from app.messages.schemas import BatchResult, MessageItem
from app.messages.service import AcceptRequest, accept_many
from tests.conftest import VARIABLES, Platform

PHONE = {"phone": "13800001234"}
CHINESE = {"account_tail": "尾号８８８", "amount": "1200.00", "note": "工资收入，祝您生活愉快！"}


@pytest.fixture
def copy_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_pg, "MIN_ROWS", 1)


def _item(customer: str, **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer, "variables": VARIABLES, "recipient": PHONE, **extra}


async def _post(platform: Platform, items: list[Any], key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    async with platform.client("system", **headers) as client:
        response = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
    assert response.status_code == 202, response.text
    BatchResult.model_validate_json(response.content)  # the documented shape
    result: dict[str, Any] = response.json()
    return result


async def _rows(platform: Platform, model: Any) -> list[Any]:
    async with platform.runtime.sessionmaker() as session:
        return list((await session.scalars(select(model))).all())


async def _count(platform: Platform, model: Any) -> int:
    async with platform.runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.usefixtures("copy_everything")
async def test_fresh_items_are_stored_whole(platform: Platform) -> None:
    await platform.create_scenario()
    later = (datetime.now(UTC) + timedelta(hours=2)).astimezone(timezone(timedelta(hours=8)))
    items = [
        _item("C1"),
        _item("C2", variables=CHINESE),
        _item("C3", send_at=later.isoformat()),
        _item("C4", channels=["email", "sms"], recipient={"email": "王@例子.中国", **PHONE}),
    ]
    result = await _post(platform, items)
    assert (result["accepted"], result["rejected"]) == (4, 0)
    ids = [r["id"] for r in result["items"]]
    assert [r["status"] for r in result["items"]] == ["queued", "queued", "scheduled", "queued"]
    assert not any(r["replayed"] for r in result["items"])
    messages = {m.id: m for m in await _rows(platform, Message)}
    keyless = messages[ids[0]]  # (the worker of the test may be sending it already)
    assert (keyless.idempotency_key, keyless.request_hash) == (None, None)
    assert keyless.created_at.tzinfo is not None
    chinese = messages[ids[1]]
    assert chinese.variables == CHINESE
    assert "尾号８８８" in chinese.content["sms"]["body"]
    scheduled = messages[ids[2]]
    assert scheduled.send_at == later
    assert scheduled.next_attempt_at == later
    assert messages[ids[3]].channels == ["email", "sms"]
    assert messages[ids[3]].recipient == {"email": "王@例子.中国", "phone": PHONE["phone"]}
    outbox = {o.message_id: o for o in await _rows(platform, Outbox)}
    assert outbox[ids[2]].due_at == later
    assert outbox[ids[2]].enqueued_at is None  # the sweeper enqueues it when due
    assert outbox[ids[0]].enqueued_at == keyless.created_at
    async with platform.client("admin") as client:
        detail = (await client.get(f"/v1/messages/{ids[1]}")).json()
    assert detail["content"]["sms"]["body"] == chinese.content["sms"]["body"]
    for index in (0, 1, 3):
        assert (await platform.wait_terminal(ids[index]))["status"] == "delivered"


@pytest.mark.usefixtures("copy_everything")
async def test_replays_repeats_and_conflicts(platform: Platform) -> None:
    await platform.create_scenario()
    first = await _post(platform, [_item("C1", idempotency_key="k1"), _item("C2")], key=None)
    k1 = first["items"][0]["id"]
    items = [
        _item("C1", idempotency_key="k1"),  # replay of the earlier batch
        _item("C3", idempotency_key="k3"),  # fresh
        _item("C3", idempotency_key="k3"),  # repeated inside this batch: replays index 1
        _item("C9", idempotency_key="k1"),  # the earlier key with another body: conflict
        _item("C4", idempotency_key="k4"),
        _item("C4", idempotency_key="k4", variables={"account_tail": "1"}),  # other body
        _item("C5"),  # keyless in a keyed group
    ]
    result = await _post(platform, items)
    by_index = {r["index"]: r for r in result["items"]}
    assert (by_index[0]["id"], by_index[0]["replayed"]) == (k1, True)
    assert by_index[1]["replayed"] is False
    assert (by_index[2]["id"], by_index[2]["replayed"]) == (by_index[1]["id"], True)
    assert by_index[3]["error"] == "IdempotencyKeyReused"
    assert by_index[3]["id"] is None
    assert by_index[5]["error"] == "IdempotencyKeyReused"
    assert by_index[6]["id"] is not None
    assert (result["accepted"], result["rejected"]) == (5, 2)
    assert await _count(platform, Message) == 2 + 3
    # Every stored message has exactly one outbox row, none for replays or conflicts
    # (until a message is finished: the worker of this test may already have sent some)
    outbox = {o.message_id for o in await _rows(platform, Outbox)}
    assert outbox <= {m.id for m in await _rows(platform, Message)}


@pytest.mark.usefixtures("copy_everything")
async def test_a_retried_batch_replays_every_item(platform: Platform) -> None:
    await platform.create_scenario()
    items = [_item(f"C{i}") for i in range(5)] + ["not an item"]
    first = await _post(platform, items, key="batch-1")
    again = await _post(platform, items, key="batch-1")
    assert [r["id"] for r in again["items"]] == [r["id"] for r in first["items"]]
    assert [r["replayed"] for r in again["items"]] == [True] * 5 + [False]
    assert again["items"][5]["error"] == "ValidationError"
    assert await _count(platform, Message) == 5


@pytest.mark.usefixtures("copy_everything")
async def test_concurrent_batches_with_the_same_keys_store_each_once(platform: Platform) -> None:
    await platform.create_scenario()
    items = [_item(f"C{i}", idempotency_key=f"same-{i}") for i in range(30)]
    results = await asyncio.gather(*(_post(platform, items) for _ in range(4)))
    ids = [[r["id"] for r in result["items"]] for result in results]
    assert all(row == ids[0] for row in ids)
    # whichever batch stored a key, the others replay it: the constraint decides
    assert sum(not r["replayed"] for result in results for r in result["items"]) == 30
    assert await _count(platform, Message) == 30


async def test_a_batch_over_the_threshold_copies(platform: Platform) -> None:
    """No fixture: the real threshold, with keyless and keyed items mixed (both orders)."""
    await platform.create_scenario()
    count = bulk_pg.MIN_ROWS + 10
    keyless_first = [
        _item(f"A{i}", idempotency_key=f"a-{i}") if i % 3 else _item(f"A{i}") for i in range(count)
    ]
    keyed_first = [
        _item(f"B{i}") if i % 3 else _item(f"B{i}", idempotency_key=f"b-{i}") for i in range(count)
    ]
    for items in (keyless_first, keyed_first):
        result = await _post(platform, items)
        assert result["accepted"] == count
        assert len({r["id"] for r in result["items"]}) == count
    replay = await _post(platform, keyed_first)
    keyed = [i % 3 == 0 for i in range(count)]
    assert [r["replayed"] for r in replay["items"]] == keyed
    assert await _count(platform, Message) == 3 * count - sum(keyed)


class RecordingQueue:
    def __init__(self) -> None:
        self.enqueued: list[str] = []

    async def start(self) -> None:
        return None

    async def enqueue(self, ids: Sequence[str], *, delay: float = 0.0) -> None:
        self.enqueued.extend(ids)

    async def ping(self) -> bool:
        return True

    async def backlog(self) -> int:
        return 0

    async def waiting_since(self) -> datetime | None:
        return None

    async def close(self) -> None:
        return None


def _requests(items: list[dict[str, Any]], owner: str = "core") -> list[AcceptRequest]:
    return [
        AcceptRequest(
            "account_movement", owner, MessageItem.model_validate(i), i.get("idempotency_key")
        )
        for i in items
    ]


@pytest.mark.usefixtures("copy_everything")
async def test_outbox_and_enqueue_only_for_inserted_messages(platform: Platform) -> None:
    await platform.create_scenario()
    queue = RecordingQueue()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    async with platform.runtime.sessionmaker() as session:
        await accept_many(session, _requests([_item("C0", idempotency_key="old")]), queue=queue)
        await commit(session)
    assert len(queue.enqueued) == 1
    queue.enqueued.clear()
    items = [
        _item("C0", idempotency_key="old"),  # replay: neither outbox row nor job
        _item("C1", idempotency_key="new"),
        _item("C2", send_at=later),  # scheduled: an outbox row, no job yet
        _item("C3"),
        _item("C3", variables={}),  # invalid: nothing
    ]
    async with platform.runtime.sessionmaker() as session:
        outcomes = await accept_many(session, _requests(items), queue=queue)
        assert queue.enqueued == []  # only once committed
        await commit(session)
    fresh = [o.id for o in outcomes[1:4] if not isinstance(o, Exception)]
    assert len(fresh) == 3
    assert sorted(queue.enqueued) == sorted([fresh[0], fresh[2]])
    async with platform.runtime.sessionmaker() as session:
        rows = await session.execute(select(Outbox.message_id, Outbox.enqueued_at))
        outbox: dict[str, datetime | None] = dict(rows.all())
    assert set(fresh) <= set(outbox)
    assert outbox[fresh[1]] is None
    assert len(outbox) <= 4  # the first message's row, unless the worker finished it


@pytest.mark.usefixtures("copy_everything")
async def test_two_groups_in_one_transaction(platform: Platform) -> None:
    """The temporary table of the keyed COPY path is gone after each group."""
    await platform.create_scenario()
    queue = RecordingQueue()
    async with platform.runtime.sessionmaker() as session:
        for group in range(2):
            items = [_item(f"C{i}", idempotency_key=f"g{group}-{i}") for i in range(3)]
            outcomes = await accept_many(session, _requests(items), queue=queue)
            assert not any(isinstance(o, Exception) for o in outcomes)
        await session.rollback()
    assert await _count(platform, Message) == 0
    assert queue.enqueued == []


# --- the COPY path itself, on PostgreSQL --------------------------------------------------

POSTGRES_ONLY = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def _message_row(message_id: str, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "id": message_id,
        "owner": "core",
        "idempotency_key": None,
        "request_hash": None,
        "scenario": "account_movement",
        "customer_id": "C1",
        "recipient": {"phone": "13800001234"},
        "variables": {"n": 2**62, "f": 1.5, "t": True, "none": None, "中": ["文", {"x": []}]},
        "channels": ["sms"],
        "channel": "sms",
        "status": "queued",
        "content": {"sms": {"body": '【银行】您的账户支出１２００元\n\t"引号" \\ 反斜杠'}},
        "decision": {"strategy": None, "skipped_channels": []},
        "cost": Decimal("0.045000"),
        "send_at": datetime(2030, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))),
        "next_attempt_at": None,
        "created_at": now,
        "updated_at": now,
    }
    row.update(changes)
    return row


@POSTGRES_ONLY
async def test_copy_stores_what_executemany_stores(platform: Platform) -> None:
    ids = new_ids("msg", 4)
    now = datetime.now(UTC)  # one object for the group, as a batch has (bind-processed once)
    times = {"created_at": now, "updated_at": now}
    rows, twins = (
        [
            _message_row(first, **times),
            _message_row(second, idempotency_key=key, request_hash="h" * 64, **times),
        ]
        for first, second, key in ((ids[0], ids[1], "copy-key"), (ids[2], ids[3], "em-key"))
    )
    async with platform.runtime.sessionmaker() as session:
        copied = await repository.insert_messages(session, rows, expected=bulk_pg.MIN_ROWS)
        executed = await repository.insert_messages(session, twins, expected=1)
        await commit(session)
    assert copied == set(ids[:2])
    assert executed == set(ids[2:])
    async with platform.runtime.sessionmaker() as session:
        stored = {m.id: m for m in (await session.scalars(select(Message))).all()}
        # and byte for byte in PostgreSQL, not only after reading back
        raw = {
            r[0]: r[1:]
            for r in await session.execute(
                text(
                    "SELECT id, recipient::text, variables::text, content::text, cost::text, "
                    "send_at::text, created_at::text FROM messages"
                )
            )
        }
    columns = [c.key for c in Message.__table__.columns if c.key not in ("id", "idempotency_key")]
    for a, b in ((ids[0], ids[2]), (ids[1], ids[3])):
        assert {c: getattr(stored[a], c) for c in columns} == {
            c: getattr(stored[b], c) for c in columns
        }
        assert raw[a] == raw[b]
    assert stored[ids[0]].attempts == 0  # a Python-side default, filled in by COPY too
    assert stored[ids[0]].cost == Decimal("0.045000")


@POSTGRES_ONLY
async def test_copy_skips_taken_keys_and_runs_inside_the_transaction(platform: Platform) -> None:
    async with platform.runtime.sessionmaker() as session:
        first = [_message_row(new_id("msg"), idempotency_key=f"t{i}") for i in range(3)]
        assert len(await repository.insert_messages(session, first, expected=500)) == 3
        await commit(session)
    again = [_message_row(new_id("msg"), idempotency_key=f"t{i}") for i in range(2, 5)]
    async with platform.runtime.sessionmaker() as session:
        # the session's first statement: the COPY must still join its transaction
        inserted = await repository.insert_messages(session, again, expected=500)
        assert inserted == {again[1]["id"], again[2]["id"]}
        await session.rollback()
    assert await _count(platform, Message) == 3


def test_new_ids_are_ulids_of_this_millisecond() -> None:
    before = new_id("msg")
    ids = new_ids("msg", 1000)
    after = new_id("msg")
    assert len(set(ids)) == 1000
    assert all(len(i) == len(before) and i.startswith("msg_") for i in ids)
    assert all(set(i[4:]) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)
    # the time part (first 10 characters of the ULID) orders them between the single ids
    assert before[:14] <= min(ids)[:14] <= max(ids)[:14] <= after[:14]
    assert len({i[:14] for i in ids}) == 1
    assert new_ids("msg", 0) == []


def test_the_collector_is_paused_by_one_batch_at_a_time() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # an overlapping batch: the first one resumes it
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()


@pytest.mark.usefixtures("copy_everything")
async def test_a_batch_leaves_the_collector_on(platform: Platform) -> None:
    await platform.create_scenario()
    await _post(platform, [_item("C1"), "bad"])
    async with platform.client("system") as client:
        unknown = await client.post(
            "/v1/messages/batch", json={"scenario": "nope", "items": [_item("C1")]}
        )
    assert unknown.status_code == 404
    assert gc.isenabled()
