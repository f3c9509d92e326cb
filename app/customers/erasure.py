"""Erasure of a customer's personal data (bank privacy law): the profile, what their
messages carry and their replies; anonymous statistics stay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.callbacks import repository as callbacks_repository
from app.customers import fields, repository
from app.customers.schemas import ErasureResult
from app.db import dialect_name
from app.ids import new_id
from app.masking import mask_openid, mask_phone
from app.messages import repository as messages_repository
from app.sandbox import repository as sandbox_repository
from app.timeutil import utcnow
from app.tracking import repository as tracking_repository

log = logging.getLogger("icc.customers")


async def begin(session: AsyncSession, customer_id: str) -> None:
    """The first of an erasure's two transactions: commit it, then :func:`erase`. Once the
    customer's sends being accepted have committed, the customer is marked as being erased:
    later sends are refused until the erasure is done (PostgreSQL; on SQLite the erasure's
    one transaction keeps them out)."""
    await repository.mark_erasure(session, customer_id)


@asynccontextmanager
async def marker_renewed(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession, customer_id: str
) -> AsyncIterator[None]:
    """Renew the customer's marker while the erasure in ``session`` runs (PostgreSQL), in
    transactions of its own, every quarter of its lifetime: however long the erasure takes
    (a huge history, a slow database), its sends stay refused until it ends. An erasure
    that dies renews nothing, and its customer is served again a lifetime later."""
    if dialect_name(session) != "postgresql":  # no marker; SQLite has one writer connection
        yield
        return
    stop = asyncio.Event()
    renewing = asyncio.create_task(_renew(sessionmaker, customer_id, stop))
    try:
        yield
    finally:
        stop.set()  # not cancelled: a renewal under way ends its transaction first
        await renewing


async def _renew(
    sessionmaker: async_sessionmaker[AsyncSession], customer_id: str, stop: asyncio.Event
) -> None:
    interval = repository.ERASURE_MARKER_TTL.total_seconds() / 4
    while True:
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except TimeoutError:
            pass
        try:
            async with sessionmaker() as session:
                await repository.renew_erasure(session, customer_id)
                await session.commit()
        except Exception:  # the next renewal may do; the erasure goes on either way
            log.exception("renewing an erasure's marker failed", extra={"customer_id": customer_id})


async def abandon(session: AsyncSession, customer_id: str) -> None:
    """After an erasure that failed: its customer's sends are taken again."""
    await repository.unmark_erasure(session, customer_id)


async def erase(session: AsyncSession, customer_id: str) -> ErasureResult:
    """Erase a customer's personal data (after :func:`begin`): the profile (contacts, name,
    attributes, tags, consent), what their messages carry (recipient, variables, rendered
    content, event details, sandbox copies, receipts waiting for a send that will not
    happen) and their replies: those that came while they had the sender's number or
    openid, and those from their phone and openid and from the numbers their messages went
    to (an earlier number, one given inline) that no other customer has now; a reply that
    may be another customer's too (a shared number) stays while they do. An SMS opt-out
    reply stays, reduced to the number and its time, so that the number stays opted out of
    marketing (a suppression record). Message statistics stay, under an anonymous customer
    id, and so do their conversions and experiment assignments (tracked links go). Works
    without a profile too (messages may name customers the platform never stored)."""
    await messages_repository.hold_customer_messages(session, customer_id)
    customer = await repository.get(session, customer_id)
    phones, openids = await messages_repository.contacts_of(session, customer_id)
    if customer is not None:
        phones |= {customer.phone} if customer.phone else set()
        openids |= {customer.wechat_openid} if customer.wechat_openid else set()
    await sandbox_repository.erase_for_customer(session, customer_id)
    anonymous_id = new_id("anon")
    await tracking_repository.erase_customer(session, customer_id, anonymous_id=anonymous_id)
    anonymized, cancelled = await messages_repository.erase_customer_messages(
        session, customer_id, anonymous_id=anonymous_id, now=utcnow()
    )
    await callbacks_repository.erase_early_receipts(session, cancelled)
    masks = {s: mask_phone(s) for p in phones for s in fields.phone_variants(p, exact=True)}
    masks |= {openid: mask_openid(openid) for openid in openids}
    await messages_repository.scrub_reasons(session, anonymous_id, masks)
    erased = await repository.delete_customer(session, customer_id)
    replies, kept = await _erase_replies(session, customer_id, phones, openids)
    # last: deleting the marker locks it, and a locked marker is no longer renewed
    await repository.unmark_erasure(session, customer_id)
    return ErasureResult(
        customer_id=customer_id,
        profile_erased=erased,
        messages_anonymized=anonymized,
        messages_cancelled=len(cancelled),
        inbound_replies_erased=replies,
        opt_outs_kept=kept,
    )


async def _erase_replies(
    session: AsyncSession, customer_id: str, phones: set[str], openids: set[str]
) -> tuple[int, int]:
    """(erased, kept) replies of the erased customer (see ``erase_inbound``)."""
    # each spelling the replies may be kept under, unless another customer has that number
    # (14155550100 is the mainland number of those digits as well as +1 415 555 0100)
    keys = [
        key
        for key in sorted({key for phone in phones for key in fields.reply_keys(phone)})
        if not await repository.phones_in_use(session, fields.phone_variants(key, exact=True))
    ]
    theirs = openids - await repository.openids_in_use(session, openids)
    return await callbacks_repository.erase_inbound(
        session, customer_id, phone_keys=keys, openids=theirs
    )
