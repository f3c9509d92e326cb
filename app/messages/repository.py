"""All SQL of the message pipeline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app import sqlite_rows
from app.db import dialect_name, insert_ignoring_conflicts, json_array
from app.experiments.models import Experiment
from app.ids import first_id_at
from app.messages import bulk_pg, pipeline_pg, pipeline_sqlite
from app.messages.models import Message, MessageEvent, Outbox
from app.messages.outcomes import Claimed, Outcome, sending_event
from app.sqlite_inline import run_sql

# Core tables: bulk writes skip the ORM's per-row bookkeeping
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
EVENTS: Table = MessageEvent.__table__  # type: ignore[assignment]
OUTBOX: Table = Outbox.__table__  # type: ignore[assignment]
CLAIMABLE = ("queued", "retrying", "sending", "scheduled")
CHUNK = 500
# A message's id is made just after its created_at is taken (service.accept_many), from the
# same clock: its time is not earlier. The slack covers a step of the clock between the two.
SINCE_SLACK_MS = 1_000
# `status || ''`: the same value, but no index serves the term. The worker's statements
# pick messages by id; given an equality on status too, SQLite's planner (which has no
# statistics) walks the status index instead, i.e. every queued message: with 36,000
# queued, a claim of 264 ids took 16.6 ms instead of 1.8 ms, and grew with the backlog.
_STATUS_BY_ID = MESSAGES.c.status.concat("")


async def by_id(session: AsyncSession, message_id: str) -> Message | None:
    return await session.get(Message, message_id)


async def by_idempotency_keys(
    session: AsyncSession, owner: str, keys: Sequence[str]
) -> dict[str, Message]:
    found: dict[str, Message] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), CHUNK):
        rows = await session.scalars(
            select(Message).where(
                Message.owner == owner, Message.idempotency_key.in_(unique[start : start + CHUNK])
            )
        )
        found.update((m.idempotency_key or "", m) for m in rows)
    return found


async def insert_messages(
    session: AsyncSession, rows: Iterable[dict[str, Any]], *, expected: int
) -> set[str]:
    """Insert, skipping rows whose (owner, idempotency_key) exists; return the inserted ids.
    ``rows`` may be lazy (made while COPY streams the first ones); ``expected``: about how
    many there are."""
    if bulk_pg.applies(session, expected):
        return await bulk_pg.insert_ignoring_conflicts(
            session, MESSAGES, rows, conflict=("owner", "idempotency_key"), returning="id"
        )
    listed = list(rows)
    if not listed:
        return set()
    if sqlite_rows.applies(session, listed):
        conflict = ("owner", "idempotency_key")
        count = await sqlite_rows.insert(session, MESSAGES, listed, ignoring=conflict)
        ids = [row["id"] for row in listed]
        # the ids are new: those found now are the rows inserted (a key taken skipped one)
        return set(ids) if count == len(ids) else await _existing(session, ids)
    # Core executemany ("insertmanyvalues"): compiled once and cached, batched with RETURNING;
    # a multi-row VALUES statement would be compiled anew for every group.
    stmt = insert_ignoring_conflicts(session, MESSAGES, "owner", "idempotency_key")
    result = await session.execute(stmt.returning(MESSAGES.c.id), listed)
    return set(result.scalars())


async def _existing(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        found.update(await session.scalars(select(MESSAGES.c.id).where(MESSAGES.c.id.in_(chunk))))
    return found


async def add_events(session: AsyncSession, events: Sequence[dict[str, Any]]) -> None:
    if sqlite_rows.applies(session, events):
        await sqlite_rows.insert(session, EVENTS, events)
    elif events:
        await session.execute(insert(EVENTS), list(events))


async def add_outbox(session: AsyncSession, entries: Sequence[dict[str, Any]]) -> None:
    if bulk_pg.applies(session, len(entries)):
        await bulk_pg.copy_rows(session, OUTBOX, entries)
    elif sqlite_rows.applies(session, entries):
        await sqlite_rows.insert(session, OUTBOX, entries)
    elif entries:
        await session.execute(insert(OUTBOX), list(entries))


async def events_of(session: AsyncSession, message_id: str) -> list[MessageEvent]:
    rows = await session.scalars(
        select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
    )
    return list(rows.all())


async def list_page(
    session: AsyncSession,
    *,
    owner: str | None,
    customer_id: str | None,
    scenario: str | None,
    status: str | None,
    since: datetime | None,
    before_id: str | None,
    limit: int,
    experiment_id: str | None = None,
    campaign_id: str | None = None,
) -> list[Message]:
    """A page of messages, newest first. (A campaign's through ix_messages_campaign, in id
    order; an experiment's through ix_messages_experiment, or the primary key when they
    are among the newest.)"""
    stmt = select(Message).order_by(Message.id.desc()).limit(limit)
    for column, value in (
        (Message.owner, owner),
        (Message.customer_id, customer_id),
        (Message.scenario, scenario),
        (Message.status, status),
        (Message.experiment_id, experiment_id),
        (Message.campaign_id, campaign_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        # a range of ids (time-sortable) for the index, created_at for exactness
        millis = int(since.timestamp() * 1000) - SINCE_SLACK_MS
        stmt = stmt.where(Message.id >= first_id_at("msg", max(millis, 0)))
        stmt = stmt.where(Message.created_at >= since)
    if before_id is not None:
        stmt = stmt.where(Message.id < before_id)
    return list((await session.scalars(stmt)).all())


async def experiment_keys(session: AsyncSession, ids: Iterable[str | None]) -> dict[str, str]:
    """experiment id -> key, for those of ``ids`` that exist (one query, none for no ids)."""
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    rows = await session.execute(
        select(Experiment.id, Experiment.key).where(Experiment.id.in_(wanted))
    )
    return dict(rows.all())


_CLAIMED = (
    MESSAGES.c.id,
    MESSAGES.c.channels,
    MESSAGES.c.channel_index,
    MESSAGES.c.recipient,
    MESSAGES.c.content,
    MESSAGES.c.attempts,
    MESSAGES.c.channel_attempts,
    # what app/messages/consent_check.py looks at (not the decision's scenario class: the
    # decision is large, and parsing it for every claim cost more than the rest of it)
    MESSAGES.c.customer_id,
    MESSAGES.c.scenario,
    MESSAGES.c.unpatched.is_not(None),
)


async def claim_for_sending(
    session: AsyncSession,
    ids: Sequence[str],
    *,
    worker: str,
    now: datetime,
    lease_until: datetime,
) -> list[Claimed]:
    """Take the lease on those messages that are due and not held by a live lease, and put
    `sending` on their timelines (on PostgreSQL, one statement: pipeline_pg)."""
    if dialect_name(session) == "postgresql":
        return await pipeline_pg.claim_for_sending(
            session, ids, statuses=CLAIMABLE, worker=worker, now=now, lease_until=lease_until
        )
    if dialect_name(session) == "sqlite":
        times = {"now": pipeline_sqlite.stored_time(session, now)}
        times["lease_until"] = pipeline_sqlite.stored_time(session, lease_until)
        claimed = await pipeline_sqlite.claim_many(session, ids, worker=worker, **times)
    else:
        claimed = await claim_many(session, ids, worker=worker, now=now, lease_until=lease_until)
    await add_events(session, [sending_event(m, now) for m in claimed])
    return claimed


async def claim_many(
    session: AsyncSession,
    ids: Sequence[str],
    *,
    worker: str,
    now: datetime,
    lease_until: datetime,
) -> list[Claimed]:
    """Take the lease on those messages that are due and not held by a live lease (the
    portable statement; on PostgreSQL the reference of pipeline_pg.claim_for_sending)."""
    params = {"ids": list(ids), "now": now, "worker": worker, "lease_until": lease_until}
    return [Claimed(*row) for row in await session.execute(_CLAIM, params)]


def _claim_statement() -> Any:
    """claim_many's statement, made once (building it cost as much as running it on SQLite)."""
    m = MESSAGES.c
    now = bindparam("now", type_=m.updated_at.type)
    return (
        update(MESSAGES)
        .where(
            m.id.in_(bindparam("ids", expanding=True)),
            _STATUS_BY_ID.in_(CLAIMABLE),
            or_(m.lease_until.is_(None), m.lease_until < now),
            or_(m.next_attempt_at.is_(None), m.next_attempt_at <= now),
        )
        .values(
            status="sending",
            lease_owner=bindparam("worker", type_=m.lease_owner.type),
            lease_until=bindparam("lease_until", type_=m.lease_until.type),
            attempts=m.attempts + 1,
            channel_attempts=m.channel_attempts + 1,
            updated_at=now,
        )
        .returning(*_CLAIMED)
    )


_CLAIM = _claim_statement()


async def apply_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], *, worker: str
) -> set[str]:
    """Write attempt outcomes for the messages this worker still leases; return their ids.
    (A message whose lease expired meanwhile belongs to whoever claimed it next.)"""
    fast = dialect_name(session) == "postgresql"
    return await _apply_outcomes(session, outcomes, worker=worker, fast=fast)


async def _apply_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], *, worker: str, fast: bool
) -> set[str]:
    """``fast``: PostgreSQL's fixed statements on arrays (pipeline_pg); else the portable
    ones (SQLite; on PostgreSQL their reference and fallback)."""
    if not outcomes:
        return set()
    # The claim's attempt count fences it: the same worker may hold a newer claim on a
    # message whose lease expired during a slow send, and the older outcome must not win.
    if fast:
        written = await pipeline_pg.write_held_outcomes(session, outcomes, worker=worker)
        if written is not None:
            return written
    # the portable statements: SQLite, and what the fixed statement cannot express
    claims = await _held_claims(session, [o.message_id for o in outcomes], worker=worker)
    # by the claim, not the message: of two outcomes of one message in a group, the older
    # claim's is not held (recorded_sends.written)
    mine = [o for o in outcomes if claims.get(o.message_id) == o.claim]
    held = {o.message_id for o in mine}
    if mine:
        await _write_outcomes(session, mine)
    return held


async def _held_claims(session: AsyncSession, ids: list[str], *, worker: str) -> dict[str, int]:
    if dialect_name(session) == "sqlite":
        return await pipeline_sqlite.held_claims(session, ids, worker=worker)
    # PostgreSQL: in id order, as receipts lock them (callbacks.repository): no deadlock
    stmt = _HELD_LOCKED if dialect_name(session) == "postgresql" else _HELD
    rows = await session.execute(stmt, {"ids": ids, "worker": worker})
    return {row.id: row.attempts for row in rows}


_HELD = select(MESSAGES.c.id, MESSAGES.c.attempts).where(
    MESSAGES.c.id.in_(bindparam("ids", expanding=True)),
    MESSAGES.c.lease_owner == bindparam("worker"),
    _STATUS_BY_ID == "sending",
)
_HELD_LOCKED = _HELD.order_by(MESSAGES.c.id).with_for_update()


async def _write_outcomes(session: AsyncSession, mine: Sequence[Outcome]) -> None:
    await _update_messages(session, mine)
    await add_events(session, [e for o in mine for e in o.events])
    finished = [o.message_id for o in mine if o.finished]
    if finished and dialect_name(session) == "sqlite":
        await run_sql(session, _FINISHED_SQLITE, (json_array(finished),))
    elif finished:
        await session.execute(delete(OUTBOX).where(OUTBOX.c.message_id.in_(finished)))
    again = [
        {"b_id": o.message_id, "b_due": o.due_at}
        for o in mine
        if not o.finished and o.due_at is not None
    ]
    if again:
        # enqueued_at = due_at: the sweeper re-sends only if the delayed job is lost. (A
        # concurrent callback may have finished the message and removed the row: fine.)
        await session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.message_id == bindparam("b_id"))
            .values(due_at=bindparam("b_due"), enqueued_at=bindparam("b_due")),
            again,
        )


# the outbox rows of finished messages on SQLite: one fixed text, the ids as one parameter
# (an IN list is a statement of its own for every group size)
_FINISHED_SQLITE = "DELETE FROM outbox WHERE message_id IN (SELECT value FROM json_each(?))"


async def _update_messages(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    """One executemany per shape of change (sent, retrying, failed...): on SQLite by
    sqlite_rows, else Core's statement, compiled once per shape and cached."""
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes:
        by_shape[tuple(sorted(o.values))].append({**o.values, "id": o.message_id})
    stmt = update(MESSAGES).where(MESSAGES.c.id == bindparam("b_id"))
    for rows in by_shape.values():
        if sqlite_rows.applies(session, rows):
            await sqlite_rows.update_by_key(session, MESSAGES, "id", rows)
        else:
            keyed = [{k: v for k, v in r.items() if k != "id"} | {"b_id": r["id"]} for r in rows]
            await session.execute(stmt, keyed)


async def due_outbox(
    session: AsyncSession,
    *,
    now: datetime,
    lost_before: datetime,
    orphaned_before: datetime,
    limit: int,
) -> list[str]:
    """Unfinished messages that are due and not under a live lease, and either never
    enqueued (scheduled), or enqueued before ``lost_before`` (their job was lost), or held by
    a worker whose lease ran out, enqueued before ``orphaned_before``.

    Each kind is its own statement on an index (ix_outbox_enqueued_due, or ix_messages_status_id
    for the few messages being sent), so that a sweep costs what it finds, not the size of
    the backlog."""
    free = or_(Message.lease_until.is_(None), Message.lease_until < now)
    due = select(Outbox.message_id).join(Message, Message.id == Outbox.message_id)
    due = due.where(Outbox.due_at <= now, free)
    expired = select(Message.id).where(Message.status == "sending", free)
    parts = [
        due.where(Outbox.enqueued_at.is_(None)).order_by(Outbox.due_at),  # scheduled
        due.where(Outbox.enqueued_at < lost_before).order_by(Outbox.enqueued_at),
        due.where(  # the worker holding them died before writing their outcome
            Outbox.message_id.in_(expired.scalar_subquery()),
            Outbox.enqueued_at < orphaned_before,
        ).order_by(Outbox.enqueued_at),
    ]
    found: dict[str, None] = {}
    for stmt in parts:
        found.update(dict.fromkeys(await _outbox_ids(session, stmt, limit - len(found))))
    return list(found)[:limit]


async def _outbox_ids(session: AsyncSession, stmt: Select[str], limit: int) -> list[str]:
    if limit <= 0:
        return []
    stmt = stmt.limit(limit)
    if dialect_name(session) == "postgresql":
        stmt = stmt.with_for_update(of=Outbox, skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def mark_enqueued(session: AsyncSession, ids: Sequence[str], at: datetime) -> None:
    for start in range(0, len(ids), CHUNK):
        await session.execute(
            update(Outbox)
            .where(Outbox.message_id.in_(list(ids[start : start + CHUNK])))
            .values(enqueued_at=at)
        )


async def unfinished_count(session: AsyncSession) -> int:
    from sqlalchemy import func

    return int(await session.scalar(select(func.count()).select_from(Outbox)) or 0)


async def contacts_of(session: AsyncSession, customer_id: str) -> tuple[set[str], set[str]]:
    """The phones and WeChat openids the customer's messages went (or were to go) to."""
    recipient = MESSAGES.c.recipient
    rows = await session.execute(
        select(recipient["phone"].as_string(), recipient["wechat_openid"].as_string())
        .where(MESSAGES.c.customer_id == customer_id)
        .distinct()
    )
    phones, openids = set(), set()
    for phone, openid in rows:
        phones |= {phone} if phone else set()
        openids |= {openid} if openid else set()
    return phones, openids


async def scrub_reasons(session: AsyncSession, customer_id: str, masks: dict[str, str]) -> None:
    """Replace each of ``masks`` (the erased customer's numbers and openids, by their masked
    form) in the kept reasons of their messages (now under ``customer_id``, their anonymous
    id): a provider's text may carry a number that masking free text cannot tell from other
    digits (85291234567)."""
    if not masks:
        return
    m = MESSAGES.c
    rows = await session.execute(
        select(m.id, m.status_reason).where(
            m.customer_id == customer_id, m.status_reason.is_not(None)
        )
    )
    longest_first = sorted(masks, key=len, reverse=True)  # +85291234567 before 85291234567
    changed = []
    for message_id, reason in rows:
        scrubbed = reason
        for secret in longest_first:
            scrubbed = scrubbed.replace(secret, masks[secret])
        if scrubbed != reason:
            changed.append({"b_id": message_id, "b_reason": scrubbed})
    if changed:
        await session.execute(
            update(MESSAGES)
            .where(m.id == bindparam("b_id"))
            .values(status_reason=bindparam("b_reason"))
            .execution_options(synchronize_session=False),
            changed,
        )


async def hold_customer_messages(session: AsyncSession, customer_id: str) -> None:
    """PostgreSQL: lock the customer's messages (in id order, as workers and receipt
    appliers lock them) at the start of an erasure, so that an outcome being written for one
    of them (with the sandbox's copy of its send) commits before the erasure reads them."""
    if dialect_name(session) == "postgresql":
        mine = select(MESSAGES.c.id).where(MESSAGES.c.customer_id == customer_id)
        await session.execute(mine.order_by(MESSAGES.c.id).with_for_update())


async def erase_customer_messages(
    session: AsyncSession, customer_id: str, *, anonymous_id: str, now: datetime
) -> tuple[int, list[str]]:
    """Erasure of a customer: their messages lose the personal data they carry (recipient,
    variables, rendered content, event details) and their customer id becomes
    ``anonymous_id``; status, channel, provider, cost, decision and times stay for the
    statistics. Unfinished messages fail instead of being sent, and a replay of an erased
    message's idempotency key is refused (409), not sent again. A message a worker is
    sending at this moment (under a live lease) has gone to the provider: it keeps its lease
    and outbox row, so that the outcome, which carries no personal data, is recorded (a
    retry would then find no contact; the sandbox keeps no copy of an erased message's send:
    sandbox.repository.record_sent). (erased, the ids of those cancelled)."""
    m = MESSAGES.c
    mine = select(m.id).where(m.customer_id == customer_id)
    if dialect_name(session) == "postgresql":
        await session.execute(mine.order_by(m.id).with_for_update())  # see _fail_unsent
    reason = "cancelled: the customer's personal data was erased"
    cancelled = await _fail_unsent(session, m.customer_id == customer_id, reason, now=now)
    await session.execute(update(EVENTS).where(EVENTS.c.message_id.in_(mine)).values(detail={}))
    erased = await session.execute(
        update(MESSAGES)
        .where(m.customer_id == customer_id)
        .values(customer_id=anonymous_id, recipient={}, variables={}, content={}, updated_at=now)
        .values(unpatched=None)
        .values(request_hash=None)  # a digest of the request, personal data included
    )
    return int(erased.rowcount), cancelled  # type: ignore[attr-defined]


async def cancel_campaign_messages(
    session: AsyncSession, campaign_id: str, *, now: datetime
) -> list[str]:
    """A cancelled campaign's messages that have not gone (scheduled for the end of quiet
    hours, queued, waiting for a retry) fail instead of being sent; those a worker is
    sending now (under a live lease) go. The ids of those cancelled."""
    reason = "cancelled: the campaign was cancelled"
    return await _fail_unsent(session, MESSAGES.c.campaign_id == campaign_id, reason, now=now)


async def _fail_unsent(
    session: AsyncSession, whose: ColumnElement[bool], reason: str, *, now: datetime
) -> list[str]:
    """Fail the unfinished messages ``whose`` selects, except those under a live lease (they
    have gone to the provider: they keep the lease and outbox row, so that their outcome is
    recorded), with a ``failed`` event saying why; drop the others' outbox rows."""
    m = MESSAGES.c
    if dialect_name(session) == "postgresql":
        # all locked first, in id order, as workers and receipt appliers lock messages: the
        # statements below would lock them in the table's order and could deadlock with them
        unsent = select(m.id).where(whose, m.status.in_(CLAIMABLE))
        await session.execute(unsent.order_by(m.id).with_for_update())
    in_flight = and_(m.status == "sending", m.lease_until.is_not(None), m.lease_until >= now)
    cancel = (
        update(MESSAGES)
        .where(whose, m.status.in_(CLAIMABLE), not_(in_flight))
        .values(status="failed", status_reason=reason, lease_owner=None, lease_until=None)
        .values(next_attempt_at=None, updated_at=now)
        .returning(m.id)
    )
    cancelled = list((await session.execute(cancel)).scalars())
    settled = select(m.id).where(whose, not_(in_flight))
    await session.execute(delete(OUTBOX).where(OUTBOX.c.message_id.in_(settled)))
    failed = {"type": "failed", "at": now, "detail": {"reason": reason}}
    await add_events(session, [{"message_id": i, **failed} for i in cancelled])
    return cancelled
