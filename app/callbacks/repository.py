from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks.models import EarlyReceipt
from app.customers.models import Customer
from app.db import dialect_name, hold_locks, lock_key, one_of, read_sqlite_utc, sqlite_select_in
from app.messages.models import InboundCustomer, InboundMessage, Message
from app.messages.repository import CHUNK, CLAIMABLE


async def messages_for_receipts(
    session: AsyncSession, *, provider: str, message_ids: Sequence[str], provider_ids: Sequence[str]
) -> list[Message]:
    """Messages the receipts name: by our id (whoever sent it, or none yet), or by the id
    ``provider`` gave them."""
    if not message_ids and not provider_ids:
        return []
    stmt = (
        select(Message)
        .where(
            or_(
                Message.id.in_(list(message_ids)),
                and_(
                    Message.provider == provider,
                    Message.provider_message_id.in_(list(provider_ids)),
                    Message.provider_message_id.is_not(None),  # the index's predicate
                ),
            )
        )
        .order_by(Message.id)  # locks in one order: concurrent appliers cannot deadlock
        .execution_options(populate_existing=True)
    )
    if dialect_name(session) == "postgresql":
        # a provider resending a report concurrently must wait and then see it applied
        stmt = stmt.with_for_update()
    return list((await session.scalars(stmt)).all())


async def add_early(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(EarlyReceipt), list(rows))


async def early_ready(session: AsyncSession, *, limit: int) -> list[EarlyReceipt]:
    """Early receipts whose message has been sent since (so it is no longer queued or
    sending; by our id, whichever provider sent it), oldest first. PostgreSQL: locked,
    skipping those another process is applying."""
    # by our id: sent by this provider, or by another after a failover (an earlier attempt)
    by_ours = select(EarlyReceipt).join(Message, Message.id == EarlyReceipt.message_id)
    by_theirs = select(EarlyReceipt).join(
        Message,
        and_(
            Message.provider == EarlyReceipt.provider,
            Message.provider_message_id == EarlyReceipt.provider_message_id,
        ),
    )
    by_theirs = by_theirs.where(
        EarlyReceipt.message_id.is_(None),
        Message.provider_message_id.is_not(None),  # the index's predicate
    )
    found: dict[int, EarlyReceipt] = {}
    for stmt in (by_ours, by_theirs):
        for row in await session.scalars(_ready(session, stmt, limit)):
            found[row.id] = row
    return sorted(found.values(), key=lambda r: r.id)[:limit]


def _ready(session: AsyncSession, stmt: Select[EarlyReceipt], limit: int) -> Select[EarlyReceipt]:
    stmt = stmt.where(Message.status.not_in(CLAIMABLE)).order_by(EarlyReceipt.id).limit(limit)
    if dialect_name(session) == "postgresql":
        stmt = stmt.with_for_update(of=EarlyReceipt, skip_locked=True)
    return stmt


async def lock_receipt_messages(session: AsyncSession, rows: Sequence[EarlyReceipt]) -> None:
    """On PostgreSQL, lock every message the early receipts may name, in id order, in one
    statement. They are applied provider by provider, each locking its messages in id
    order: across providers that order would be P1's ids, then P2's, and could deadlock with
    a callback locking the same messages in id order."""
    if dialect_name(session) != "postgresql" or not rows:
        return
    ours = sorted({r.message_id for r in rows if r.message_id})
    theirs = sorted({r.provider_message_id for r in rows if r.provider_message_id})
    providers = sorted({r.provider for r in rows})
    named = or_(
        Message.id.in_(ours),
        and_(Message.provider.in_(providers), Message.provider_message_id.in_(theirs)),
    )
    await session.execute(select(Message.id).where(named).order_by(Message.id).with_for_update())


async def delete_early(session: AsyncSession, ids: Sequence[int]) -> None:
    if ids:
        await session.execute(delete(EarlyReceipt).where(EarlyReceipt.id.in_(list(ids))))


async def expire_early(
    session: AsyncSession, *, received_before: datetime
) -> list[tuple[str, str | None, str | None]]:
    """Delete the early receipts that waited too long; (provider, provider's id, our id) of
    each, once, even with several processes expiring at the same time."""
    e = EarlyReceipt
    stmt = (
        delete(e)
        .where(e.received_at < received_before)
        .returning(e.provider, e.provider_message_id, e.message_id)
    )
    return [(r[0], r[1], r[2]) for r in await session.execute(stmt)]


async def add_inbound(
    session: AsyncSession, rows: Sequence[dict[str, Any]], links: Sequence[dict[str, str]]
) -> None:
    """Store replies and their links to the customers they came from (``InboundCustomer``)."""
    if rows:
        await session.execute(insert(InboundMessage), list(rows))
    if links:
        await session.execute(insert(InboundCustomer), list(links))


async def sms_opt_outs(session: AsyncSession, keys: Collection[str]) -> dict[str, datetime]:
    """The time of the latest opt-out reply from each of these numbers (``fields.phone_key``)
    that sent one."""
    unique = sorted(set(keys))
    found: dict[str, datetime] = {}
    if dialect_name(session) == "sqlite":
        latest = await sqlite_select_in(session, _OPT_OUTS_SQLITE, unique)
        return {key: read_sqlite_utc(at) for key, at in latest if key is not None}
    for start in range(0, len(unique), CHUNK):
        m = InboundMessage
        rows = await session.execute(
            select(m.sender_key, func.max(m.received_at))
            .where(
                one_of(session, m.sender_key, unique[start : start + CHUNK]),
                m.channel == "sms",
                m.opt_out,
            )
            .group_by(m.sender_key)
        )
        found.update((key, at) for key, at in rows if key is not None)
    return found


# sms_opt_outs on SQLite, the numbers as one parameter (db.sqlite_select_in): for every
# group of sends deciding SMS patches
_OPT_OUTS_SQLITE = (
    "SELECT sender_key, max(received_at) FROM inbound_messages"
    " WHERE sender_key IN (SELECT value FROM json_each(?)) AND channel = 'sms' AND opt_out = 1"
    " GROUP BY sender_key"
)


async def erase_early_receipts(session: AsyncSession, message_ids: Sequence[str]) -> int:
    """Drop the early receipts of messages an erasure cancelled: never sent now, they would
    never apply. (Those of sent messages stay, to give them their delivery status.) On
    PostgreSQL rows the sweeper is applying are skipped, not waited for: it locks receipts
    before messages, and the erasure holds these messages already."""
    if not message_ids:
        return 0
    e, m = EarlyReceipt, Message
    theirs = select(m.provider, m.provider_message_id).where(
        m.id.in_(list(message_ids)), m.provider_message_id.is_not(None)
    )
    mine = select(e.id).where(
        or_(
            e.message_id.in_(list(message_ids)),
            and_(e.message_id.is_(None), tuple_(e.provider, e.provider_message_id).in_(theirs)),
        )
    )
    if dialect_name(session) == "postgresql":
        mine = mine.with_for_update(skip_locked=True)
    dropped = await session.execute(delete(e).where(e.id.in_(mine)))
    return int(dropped.rowcount)  # type: ignore[attr-defined]


async def erase_inbound(
    session: AsyncSession,
    customer_id: str,
    *,
    phone_keys: Collection[str],
    openids: Collection[str],
) -> tuple[int, int]:
    """Erase the replies of a customer being erased (their profile deleted already): those
    linked to them, and those from these numbers (``fields.phone_key``) and openids of
    theirs that no other customer has now: (erased, kept). A reply also linked to another
    customer, still there, stays whole: it may be theirs (a shared number), and goes with
    the last of them. An SMS opt-out is kept as a suppression record, reduced to the
    number's key, the channel and the time (its text and the number as typed go): erasing
    it would make the number marketable again, for whoever sends to it inline or records it
    next. A WeChat reply changes no consent but its openid's customer's: nothing to keep."""
    m, link = InboundMessage, InboundCustomer
    # a union of index lookups (PostgreSQL scanned every reply for them OR-ed together)
    mine = [select(link.inbound_id.label("id")).where(link.customer_id == customer_id)]
    if phone_keys:
        mine.append(select(m.id).where(m.sender_key.in_(sorted(phone_keys)), m.channel != "wechat"))
    if openids:
        mine.append(select(m.id).where(m.sender_key.in_(sorted(openids)), m.channel == "wechat"))
    candidates = union(*mine).subquery()
    await _hold_senders(session, select(m.sender_key).join(candidates, candidates.c.id == m.id))
    theirs_too = exists().where(
        link.inbound_id == m.id, link.customer_id != customer_id, link.customer_id == Customer.id
    )
    suppression = and_(m.opt_out, m.channel != "wechat")
    found = await session.execute(  # a snapshot of its own: after what _hold_senders waited for
        select(m.id, suppression).join(candidates, candidates.c.id == m.id).where(~theirs_too)
    )
    kept: list[str] = []
    erased: list[str] = []
    for reply_id, suppresses in found:
        (kept if suppresses else erased).append(reply_id)
    await session.execute(delete(link).where(link.customer_id == customer_id))
    for start in range(0, len(kept), CHUNK):
        await session.execute(
            update(m)
            .where(m.id.in_(kept[start : start + CHUNK]))
            .values(sender=m.sender_key, text="")
            .execution_options(synchronize_session=False)
        )
    for start in range(0, len(erased), CHUNK):  # their links go with them (ON DELETE CASCADE)
        await session.execute(delete(m).where(m.id.in_(erased[start : start + CHUNK])))
    return len(erased), len(kept)


# Two erasures of customers sharing a number at once (joint holders, a bulk erasure): each
# would see the other's profile, deleted but not committed, keep the reply "for them", and
# the reply would outlive both. So on PostgreSQL an erasure holds its replies' senders before
# it decides: the second one decides after the first has committed, and takes the reply.
REPLY_SENDER_LOCKS = 0x1CC0006  # an advisory lock namespace (app.db)


async def _hold_senders(session: AsyncSession, senders: Select[str | None]) -> None:
    if dialect_name(session) != "postgresql":
        return  # SQLite's writer holds the whole database until it commits
    keys = {lock_key(sender) for sender in await session.scalars(senders) if sender}
    await hold_locks(session, REPLY_SENDER_LOCKS, keys)
