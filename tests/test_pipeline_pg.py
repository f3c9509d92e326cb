"""The worker's PostgreSQL statements (app/messages/pipeline_pg.py) against the portable ones.

Each scenario runs twice on the same PostgreSQL database, on two copies of the same rows
(ids with different prefixes): once through the portable SQLAlchemy statements of
repository.py (the reference: what the worker ran before) and once through the fast path.
The tables must end up the same, and so must what the calls return.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import create_engine, create_sessionmaker
from app.messages import pipeline_pg, repository
from app.messages.outcomes import Attempt, Claimed, Outcome, decide, sending_event
from app.messages.repository import EVENTS, MESSAGES, OUTBOX
from app.settings import RetrySettings
from channels.base import SendResult
from channels.errors import ChannelError, PermanentChannelError, TransientChannelError

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
WORKER = "worker-a"
RETRY = RetrySettings(max_attempts=3, base_delay=1.0, max_delay=10.0)

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(postgres_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _message(message_id: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": message_id,
        "owner": "core-banking",
        "idempotency_key": None,
        "scenario": "account_movement",
        "customer_id": "C1",
        "recipient": {"phone": "13800001234", "email": "a@example.com"},
        "variables": {"amount": "1.00"},
        "channels": ["sms", "email"],
        "channel_index": 0,
        "status": "queued",
        "attempts": 0,
        "channel_attempts": 0,
        "content": {"sms": {"body": "您好"}, "email": {"subject": "s", "body": "b"}},
        "decision": {},
        "created_at": NOW - timedelta(minutes=5),
        "updated_at": NOW - timedelta(minutes=5),
    }
    return {**row, **changes}


async def _insert(
    sessions: Sessions, prefix: str, rows: Sequence[dict[str, Any]], outbox: Sequence[str]
) -> None:
    keys = {key for row in rows for key in row}  # executemany: the same keys in every row
    filled = [{**dict.fromkeys(keys), **r, "id": prefix + r["id"]} for r in rows]
    async with sessions() as session:
        await session.execute(insert(MESSAGES), filled)
        entries = [{"message_id": prefix + i, "due_at": NOW, "enqueued_at": NOW} for i in outbox]
        if entries:
            await session.execute(insert(OUTBOX), entries)
        await session.commit()


async def _tables(
    sessions: Sessions, prefix: str, *, events_by_message: bool = False
) -> dict[str, list[Any]]:
    """The rows of ``prefix``'s messages, prefix removed; events in insertion (id) order
    (``events_by_message``: grouped by message, each message's in insertion order)."""

    def strip(row: Any, key: str) -> dict[str, Any]:
        values = dict(row._mapping)
        values[key] = values[key].removeprefix(prefix)
        return values

    like = prefix + "%"
    async with sessions() as session:
        messages = await session.execute(
            select(MESSAGES).where(MESSAGES.c.id.like(like)).order_by(MESSAGES.c.id)
        )
        events = await session.execute(
            select(EVENTS).where(EVENTS.c.message_id.like(like)).order_by(EVENTS.c.id)
        )
        outbox = await session.execute(
            select(OUTBOX).where(OUTBOX.c.message_id.like(like)).order_by(OUTBOX.c.message_id)
        )
        event_rows = [strip(r, "message_id") for r in events]
    for e in event_rows:
        del e["id"]  # a sequence: only the order counts
    if events_by_message:
        event_rows.sort(key=lambda e: str(e["message_id"]))
    return {
        "messages": [strip(r, "id") for r in messages],
        "events": event_rows,
        "outbox": [strip(r, "message_id") for r in outbox],
    }


def _prefixes() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"old{tag}-", f"new{tag}-"


# --- the claim ---------------------------------------------------------------------------

CLAIM_ROWS = [
    _message("due-queued"),
    _message("due-retrying", status="retrying", next_attempt_at=NOW - timedelta(seconds=1)),
    _message("due-now-scheduled", status="scheduled", next_attempt_at=NOW),
    _message("not-due", status="retrying", next_attempt_at=NOW + timedelta(seconds=1)),
    _message(
        "live-lease",
        status="sending",
        lease_owner="worker-b",
        lease_until=NOW + timedelta(seconds=30),
        attempts=1,
        channel_attempts=1,
    ),
    _message(
        "lease-ends-now", status="sending", lease_owner="worker-b", lease_until=NOW, attempts=1
    ),
    _message(
        "expired-lease",
        status="sending",
        lease_owner="worker-b",
        lease_until=NOW - timedelta(seconds=1),
        attempts=2,
        channel_attempts=2,
        channel_index=1,
    ),
    _message("sent", status="sent", sent_at=NOW - timedelta(minutes=1)),
    _message("failed", status="failed"),
    _message("delivered", status="delivered"),
    _message("not-asked"),  # due, but not among the ids claimed
]
CLAIMED = {"due-queued", "due-retrying", "due-now-scheduled", "expired-lease"}


async def _claim(
    sessions: Sessions,
    prefix: str,
    claim: Callable[..., Any],
    add_events: Callable[..., Any] | None = None,
    wanted: Sequence[str] = (),
) -> list[Claimed]:
    """A claim (of ``wanted``, by default CLAIM_ROWS' but one and two more), and its
    `sending` events written by ``add_events`` (when the claim does not write them itself)."""
    if not wanted:
        wanted = [r["id"] for r in CLAIM_ROWS if r["id"] != "not-asked"] + ["missing", "sent"]
    async with sessions() as session:
        claimed: list[Claimed] = await claim(
            session,
            [prefix + i for i in wanted],
            worker=WORKER,
            now=NOW,
            lease_until=NOW + timedelta(seconds=60),
        )
        if add_events is not None:
            await add_events(session, [sending_event(m, NOW) for m in claimed])
        await session.commit()
    return sorted((replace(c, id=c.id.removeprefix(prefix)) for c in claimed), key=lambda c: c.id)


async def test_claim_takes_exactly_the_due_unleased_messages(sessions: Sessions) -> None:
    old, new = _prefixes()
    for prefix in (old, new):
        await _insert(sessions, prefix, CLAIM_ROWS, outbox=[])
    reference = await _claim(sessions, old, repository.claim_many, repository.add_events)
    claimed = await _claim(sessions, new, repository.claim_for_sending)  # one statement

    assert {c.id for c in claimed} == CLAIMED
    assert claimed == reference
    expired = next(c for c in claimed if c.id == "expired-lease")
    assert (expired.attempts, expired.channel_attempts, expired.channel_index) == (3, 3, 1)
    assert expired.channels == ["sms", "email"]
    assert expired.content["sms"] == {"body": "您好"}
    # (RETURNING has no order: the `sending` events are compared message by message)
    tables = await _tables(sessions, new, events_by_message=True)
    assert tables == await _tables(sessions, old, events_by_message=True)
    assert len(tables["events"]) == len(CLAIMED)


# --- outcomes ----------------------------------------------------------------------------


def _claimed(message_id: str, *, channel_index: int = 0, channel_attempts: int = 1) -> Claimed:
    row = _message(message_id)
    return Claimed(
        message_id,
        row["channels"],
        channel_index,
        row["recipient"],
        row["content"],
        1,
        channel_attempts,
    )


def _sent(provider_id: str, *, delivered: bool = False, cost: str | None = "0.05") -> Attempt:
    result = SendResult(provider_message_id=provider_id, delivered=delivered)
    money = None if cost is None else Decimal(cost)
    return Attempt("sms", "sandbox-sms", 12.5, result=result, cost=money)


def _error(error: ChannelError, channel: str = "sms") -> Attempt:
    return Attempt(channel, f"sandbox-{channel}", 3.25, error=error)


def _outcomes(prefix: str) -> list[Outcome]:
    """An outcome of every shape, for messages named after them (claim 1, by WORKER)."""

    def decided(name: str, attempts: list[Attempt], **claimed: Any) -> Outcome:
        return decide(_claimed(prefix + name, **claimed), attempts, RETRY, NOW)

    transient = TransientChannelError("timeout", code="timeout")
    permanent = PermanentChannelError("unknown number", code="invalid")
    outcomes = [
        decided("sent", [_sent("p-1")]),
        decided("sent-precise-cost", [_sent("p-2", cost="0.12345678")]),
        decided("sent-free", [_sent("p-3", cost=None)]),
        decided("delivered", [_sent("p-4", delivered=True)]),
        decided("failover-sent", [_error(transient), _sent("p-5")]),
        decided("retrying", [_error(transient)]),
        decided(
            "rate-limited",
            [_error(TransientChannelError("no slot", code="rate_limited"))],
            channel_attempts=3,
        ),
        decided("retry-no-outbox", [_error(transient)]),
        decided("next-channel", [_error(permanent)]),
        decided("gave-up", [_error(transient, "email")], channel_index=1, channel_attempts=3),
        decided("failed-last", [_error(permanent, "email")], channel_index=1),
        decided("stale-claim", [_sent("p-6")]),
        decided("other-worker", [_sent("p-7")]),
        decided("not-sending", [_sent("p-8")]),
        decided("missing", [_sent("p-9")]),
    ]
    for outcome in outcomes:
        if outcome.message_id.endswith("stale-claim"):
            outcome.claim = 0  # an older claim of this worker's
    return outcomes


HELD = {
    "sent",
    "sent-precise-cost",
    "sent-free",
    "delivered",
    "failover-sent",
    "retrying",
    "rate-limited",
    "retry-no-outbox",
    "next-channel",
    "gave-up",
    "failed-last",
}


def _held_rows() -> list[dict[str, Any]]:
    lease = {"status": "sending", "lease_owner": WORKER, "lease_until": NOW, "attempts": 1}
    rows = [_message(name, **lease, channel_attempts=1) for name in HELD | {"stale-claim"}]
    rows.append(_message("other-worker", **{**lease, "lease_owner": "worker-b"}))
    rows.append(_message("not-sending", **{**lease, "status": "queued"}))
    for row in rows:
        if row["id"] in ("gave-up", "failed-last"):
            row["channel_index"] = 1
    return rows


async def _apply(sessions: Sessions, outcomes: list[Outcome], *, fast: bool) -> set[str]:
    async with sessions() as session:
        held = await repository._apply_outcomes(session, outcomes, worker=WORKER, fast=fast)
        await session.commit()
    return held


@pytest.fixture
def fast_writes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each pipeline_pg.write_held_outcomes wrote (False: it fell back)."""
    answers: list[bool] = []
    write = pipeline_pg.write_held_outcomes

    async def recorded(
        session: AsyncSession, outcomes: Sequence[Outcome], *, worker: str
    ) -> set[str] | None:
        written = await write(session, outcomes, worker=worker)
        answers.append(written is not None)
        return written

    monkeypatch.setattr(pipeline_pg, "write_held_outcomes", recorded)
    return answers


async def _compare(
    sessions: Sessions, make: Callable[[str], list[Outcome]]
) -> tuple[set[str], dict[str, list[Any]]]:
    old, new = _prefixes()
    everything = [r["id"] for r in _held_rows()]
    for prefix in (old, new):
        await _insert(
            sessions, prefix, _held_rows(), outbox=[i for i in everything if "no-" not in i]
        )
    random.seed(7)  # the same backoff jitter for both
    held_old = await _apply(sessions, make(old), fast=False)
    random.seed(7)
    held_new = await _apply(sessions, make(new), fast=True)
    assert {i.removeprefix(new) for i in held_new} == {i.removeprefix(old) for i in held_old}
    tables = await _tables(sessions, new)
    assert tables == await _tables(sessions, old)
    return {i.removeprefix(new) for i in held_new}, tables


async def test_outcomes_of_every_shape_are_written_as_before(
    sessions: Sessions, fast_writes: list[bool]
) -> None:
    held, tables = await _compare(sessions, _outcomes)
    assert held == HELD
    assert fast_writes == [True]
    messages = {m["id"]: m for m in tables["messages"]}
    assert messages["sent-precise-cost"]["cost"] == Decimal("0.123457")
    assert messages["sent-free"]["cost"] is None
    assert messages["rate-limited"]["channel_attempts"] == 2
    assert messages["next-channel"]["status"] == "queued"
    assert messages["next-channel"]["channel"] == "email"
    assert messages["gave-up"]["status"] == "failed"
    assert messages["stale-claim"]["status"] == "sending"  # untouched
    assert messages["delivered"]["delivered_at"] == NOW
    assert messages["sent"]["delivered_at"] is None
    outbox = {o["message_id"]: o for o in tables["outbox"]}
    assert "sent" not in outbox
    assert "failed-last" not in outbox
    assert outbox["retrying"]["due_at"] > NOW
    assert outbox["retrying"]["enqueued_at"] == outbox["retrying"]["due_at"]
    assert outbox["next-channel"]["due_at"] == NOW
    assert outbox["stale-claim"]["due_at"] == NOW
    failover = [e["type"] for e in tables["events"] if e["message_id"] == "failover-sent"]
    assert failover == ["attempt_failed", "failover", "sent"]


async def test_a_message_twice_in_a_group_falls_back(
    sessions: Sessions, fast_writes: list[bool]
) -> None:
    def twice(prefix: str) -> list[Outcome]:
        outcomes = _outcomes(prefix)
        first = decide(_claimed(prefix + "retrying"), [_sent("p-0")], RETRY, NOW)
        return [first, *outcomes]

    held, _ = await _compare(sessions, twice)
    assert held == HELD
    assert fast_writes == [False]


async def test_a_column_outside_the_fixed_set_falls_back(
    sessions: Sessions, fast_writes: list[bool]
) -> None:
    def unusual(prefix: str) -> list[Outcome]:
        outcomes = _outcomes(prefix)
        outcomes[0].values["delivery_code"] = "DELIVRD"
        return outcomes

    held, tables = await _compare(sessions, unusual)
    assert held == HELD
    assert fast_writes == [False]
    messages = {m["id"]: m for m in tables["messages"]}
    assert messages["sent"]["delivery_code"] == "DELIVRD"


async def test_nothing_held_writes_nothing(sessions: Sessions, fast_writes: list[bool]) -> None:
    def stale(prefix: str) -> list[Outcome]:
        return [o for o in _outcomes(prefix) if o.message_id.removeprefix(prefix) not in HELD]

    held, tables = await _compare(sessions, stale)
    assert held == set()
    assert fast_writes == [True]  # the fenced statement ran and changed nothing
    statuses = {m["id"]: m["status"] for m in tables["messages"]}
    assert statuses["stale-claim"] == "sending"
    assert statuses["other-worker"] == "sending"


async def test_a_claim_taken_over_while_the_outcome_waits_is_not_written(
    sessions: Sessions, fast_writes: list[bool]
) -> None:
    """The fence is the outcome's own UPDATE: when another worker's claim holds the row
    (its lease expired during a slow send), the outcome waits for it, then sees the newer
    claim and writes nothing for that message; the others of the group are written."""
    _, prefix = _prefixes()
    await _insert(sessions, prefix, _held_rows(), outbox=[r["id"] for r in _held_rows()])
    wanted = (prefix + "sent", prefix + "gave-up")
    outcomes = [o for o in _outcomes(prefix) if o.message_id in wanted]
    assert len(outcomes) == 2
    async with sessions() as other:
        await other.execute(
            update(MESSAGES)
            .where(MESSAGES.c.id == prefix + "sent")
            .values(lease_owner="worker-b", attempts=2, lease_until=NOW + timedelta(minutes=1))
        )
        writing = asyncio.create_task(_apply(sessions, outcomes, fast=True))
        await asyncio.sleep(0.5)
        assert not writing.done(), "the outcome waits for the row the other claim holds"
        await other.commit()
    assert await asyncio.wait_for(writing, 10) == {prefix + "gave-up"}
    assert fast_writes == [True]
    tables = await _tables(sessions, prefix)
    messages = {m["id"]: m for m in tables["messages"]}
    assert messages["sent"]["status"] == "sending"
    assert messages["sent"]["lease_owner"] == "worker-b"
    assert messages["gave-up"]["status"] == "failed"
    written = {e["message_id"] for e in tables["events"]}
    assert "sent" not in written
    assert "gave-up" in written
    assert "sent" in {o["message_id"] for o in tables["outbox"]}


async def test_outcomes_reach_messages_and_outbox_by_their_keys(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many messages sent and a backlog waiting, the outcome statement's plan still
    goes from the outcomes to their rows by primary key. (It used to scan the status index's
    'sending' entries, dead ones included, and the outbox, so each group cost more as
    messages were sent, until vacuum: 0.14 -> 1.0 ms of PostgreSQL per message.)"""
    _, prefix = _prefixes()
    sent = [_message(f"done-{i}", status="sent") for i in range(3000)]
    waiting = [_message(f"wait-{i}") for i in range(3000)]
    held = _held_rows()
    await _insert(sessions, prefix, sent + waiting + held, outbox=[r["id"] for r in waiting + held])
    plans: list[str] = []
    planned = pipeline_pg.planned_by_keys

    class Explaining:
        """The driver, explaining each statement as it is planned there before running it."""

        def __init__(self, driver: Any) -> None:
            self.driver = driver

        async def fetch(self, sql: str, *args: Any) -> Any:
            explained = await self.driver.fetch("EXPLAIN " + sql, *args)
            plans.append("\n".join(r[0] for r in explained))
            return await self.driver.fetch(sql, *args)

    @contextlib.asynccontextmanager
    async def explaining(session: AsyncSession) -> AsyncIterator[Explaining]:
        async with planned(session) as driver:
            yield Explaining(driver)

    monkeypatch.setattr(pipeline_pg, "planned_by_keys", explaining)
    async with sessions() as session:
        await session.execute(text("ANALYZE messages"))
        await session.execute(text("ANALYZE outbox"))
        assert await pipeline_pg.write_held_outcomes(session, _outcomes(prefix), worker=WORKER)
        # set for the statement only, in a transaction it did not begin
        assert (await session.execute(text("SHOW enable_seqscan"))).scalar() == "on"
        await session.rollback()
    (plan,) = plans
    assert "ix_messages_status_id" not in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "Index Scan using pk_messages" in plan, plan
    assert "Index Scan using pk_outbox" in plan, plan


async def test_outcomes_lock_in_id_order_as_receipts_do(sessions: Sessions) -> None:
    """A receipt applier locks messages in id order (callbacks.repository). An outcome
    group finishing in another order must not take a later row first and then wait for an
    earlier one that the applier holds while it waits for the later: PostgreSQL would abort
    one of them (the outcome is then written again, Runtime._record_group; the receipt
    comes again from the provider). The order comes from the plan, a nested loop over the
    sorted array by the primary key: the only plan left to it, even over a table of a few
    rows, where it used to hash the array and scan the table, in the table's order
    (pipeline_pg._BY_KEYS)."""
    _, prefix = _prefixes()
    filler = [_message(f"done-{i}", status="sent") for i in range(3000)]
    await _insert(sessions, prefix, filler + _held_rows(), outbox=[r["id"] for r in _held_rows()])
    async with sessions() as session:
        await session.execute(text("ANALYZE messages"))
        await session.commit()
    first, second = prefix + "delivered", prefix + "sent"
    assert first < second
    by_id = {o.message_id: o for o in _outcomes(prefix)}
    group = [by_id[second], by_id[first]]  # finished in the other order
    async with sessions() as receipts:
        locking = select(MESSAGES.c.id).with_for_update()
        await receipts.execute(locking.where(MESSAGES.c.id == first))
        writing = asyncio.create_task(_apply(sessions, group, fast=True))
        await asyncio.sleep(0.5)
        assert not writing.done(), "the group waits for the row the applier holds"
        await receipts.execute(locking.where(MESSAGES.c.id == second))  # no deadlock
        await receipts.commit()
    assert await asyncio.wait_for(writing, 10) == {first, second}
