"""Erasure of a customer's personal data (bank privacy law): the profile, what their
messages carry and their replies; anonymous statistics stay."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks import repository as callbacks_repository
from app.customers import fields, repository
from app.customers.schemas import ErasureResult
from app.ids import new_id
from app.masking import mask_openid, mask_phone
from app.messages import repository as messages_repository
from app.sandbox import repository as sandbox_repository
from app.timeutil import utcnow
from app.tracking import repository as tracking_repository


async def begin(session: AsyncSession, customer_id: str) -> None:
    """The first of an erasure's two transactions: commit it, then :func:`erase`. Once the
    customer's sends being accepted have committed, the customer is marked as being erased:
    later sends are refused until the erasure is done (PostgreSQL; on SQLite the erasure's
    one transaction keeps them out)."""
    await repository.mark_erasure(session, customer_id)


async def abandon(session: AsyncSession, customer_id: str) -> None:
    """After an erasure that failed: its customer's sends are taken again."""
    await repository.unmark_erasure(session, customer_id)


async def erase(session: AsyncSession, customer_id: str) -> ErasureResult:
    """Erase a customer's personal data (after :func:`begin`): the profile
    (contacts, name, attributes, tags, consent), what their messages carry (recipient,
    variables, rendered content, event details, sandbox copies, receipts waiting for a send
    that will not happen) and their replies: from their phone and WeChat openid and from
    those their messages went to (an earlier number, one given inline), unless another
    customer has it now. An SMS opt-out reply stays, reduced to the number and its time, so
    that the number stays opted out of marketing (a suppression record). Message statistics
    stay, under an anonymous customer id, and so do their conversions and experiment
    assignments (tracked links go). Works without a profile too (messages may name customers
    the platform never stored)."""
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
    await repository.unmark_erasure(session, customer_id)
    replies, kept = await _erase_replies(session, phones, openids)
    return ErasureResult(
        customer_id=customer_id,
        profile_erased=erased,
        messages_anonymized=anonymized,
        messages_cancelled=len(cancelled),
        inbound_replies_erased=replies,
        opt_outs_kept=kept,
    )


async def _erase_replies(
    session: AsyncSession, phones: set[str], openids: set[str]
) -> tuple[int, int]:
    """(erased, kept) replies from the erased customer's numbers and openids."""
    replies = kept = 0
    # each spelling the replies may be kept under, unless another customer has that number
    # (14155550100 is the mainland number of those digits as well as +1 415 555 0100)
    for key in sorted({key for phone in phones for key in fields.reply_keys(phone)}):
        if not await repository.phones_in_use(session, fields.phone_variants(key, exact=True)):
            erased_now, kept_now = await callbacks_repository.erase_inbound(session, [key])
            replies, kept = replies + erased_now, kept + kept_now
    theirs = openids - await repository.openids_in_use(session, openids)
    if theirs:  # a WeChat reply changes no consent: nothing to keep
        erased_now, _ = await callbacks_repository.erase_inbound(session, theirs, keep=False)
        replies += erased_now
    return replies, kept
