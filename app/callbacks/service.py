"""Apply what a provider reported: delivered, failed (then the next channel, if any), and
customers' replies. Receipts are idempotent; unknown messages are acknowledged and ignored.

A receipt may come before the worker has recorded the send (a fast gateway reports within
milliseconds): it is kept as an early receipt and applied by the sweeper once the message is
sent (``apply_early``), so the worker's path pays nothing for it.

A receipt naming our message from a provider that is not the one the message was sent by,
or from that provider but with another id than the send recorded, reports an earlier
attempt: one that timed out here and failed over or was retried, yet reached the provider
(the customer may have the message twice, and the provider bills it). It goes on the
timeline as ``earlier_attempt_receipt`` and changes nothing else."""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks import repository
from app.callbacks.models import EarlyReceipt
from app.customers import service as customers
from app.customers.fields import phone_key
from app.ids import new_id
from app.messages import repository as messages
from app.messages.models import (
    CODE_LENGTH,
    ID_LENGTH,
    PROVIDER_ID_LENGTH,
    SENDER_LENGTH,
    Message,
)
from app.messages.outcomes import event
from app.messages.repository import CLAIMABLE
from app.timeutil import as_utc, utcnow
from channels.base import CallbackResult, DeliveryReceipt, InboundReply

log = logging.getLogger("icc.callbacks")

OPT_OUT_KEYWORDS = frozenset({"TD", "T", "N", "R", "退订", "取消", "拒收", "UNSUBSCRIBE", "STOP"})


@dataclass
class Applied:
    delivered: int = 0
    failed: int = 0
    duplicates: int = 0
    unknown: int = 0
    earlier: int = 0  # reports on an attempt another provider's send superseded
    pending: int = 0  # came before the send was recorded: kept, applied by the sweeper
    replies: int = 0
    requeue: list[str] = field(default_factory=list)  # messages falling back to a next channel


# The instruction itself sent back ("回复TD退订", "拒收请回复R"), as customers do.
_INSTRUCTION = re.compile(r"(?:拒收请)?回复(?:TD|T|N|R|退订)(?:退订)?|(?:TD|T|N|R)退订")


def is_opt_out(text: str) -> bool:
    """A reply that asks to stop: a keyword, however typed (full-width letters from a
    Chinese input method, punctuation, spaces, any case), or the instruction sent back.
    Not a keyword inside other words ("不要退订" is not one)."""
    words = "".join(
        c
        for c in unicodedata.normalize("NFKC", text).upper()
        if unicodedata.category(c)[0] not in "PZSC"  # punctuation, spaces, symbols, controls
    )
    return words in OPT_OUT_KEYWORDS or _INSTRUCTION.fullmatch(words) is not None


async def apply(
    session: AsyncSession, *, provider: str, channel: str, result: CallbackResult
) -> Applied:
    applied = Applied()
    receipts = [r for r in result.receipts if _ids_fit(r, provider)]
    applied.unknown = len(result.receipts) - len(receipts)
    found = await repository.messages_for_receipts(
        session,
        provider=provider,
        message_ids=[r.message_id for r in receipts if r.message_id],
        provider_ids=[r.provider_message_id for r in receipts if r.provider_message_id],
    )
    by_ours = {m.id: m for m in found}
    by_theirs = {m.provider_message_id: m for m in found if m.provider == provider}
    now = utcnow()
    early: list[dict[str, Any]] = []
    for receipt in receipts:
        message = by_ours.get(receipt.message_id or "") or by_theirs.get(
            receipt.provider_message_id or ""
        )
        if _is_early(message, receipt, channel):
            early.append(_early_row(provider, receipt, now))
        elif message is not None and _of_earlier_attempt(message, receipt, provider):
            await _note_earlier_attempt(session, message, receipt, provider, now, applied)
        elif message is None:
            applied.unknown += 1
            log.info(
                "receipt for an unknown message ignored",
                extra={"provider": provider, "provider_message_id": receipt.provider_message_id},
            )
        else:
            await _apply_receipt(session, message, receipt, provider, now, applied)
    await repository.add_early(session, early)
    applied.pending = len(early)
    replies = [r for r in result.replies if _sender_fits(r, provider)]
    await _store_replies(session, provider, channel, replies, now)
    applied.replies = len(replies)
    return applied


def _ids_fit(receipt: DeliveryReceipt, provider: str) -> bool:
    """Whether the receipt's ids fit their columns. A longer one is none of ours (we could
    not have stored it): the receipt is ignored rather than refusing the whole batch."""
    ours, theirs = receipt.message_id or "", receipt.provider_message_id or ""
    if len(ours) <= ID_LENGTH and len(theirs) <= PROVIDER_ID_LENGTH:
        return True
    log.warning(
        "receipt with an over-long id ignored",
        extra={"provider": provider, "provider_message_id": theirs[:PROVIDER_ID_LENGTH]},
    )
    return False


def _sender_fits(reply: InboundReply, provider: str) -> bool:
    """Whether the reply's sender fits its column: a longer one is no phone number, openid
    or address, so no customer of ours; ignored rather than refusing the whole batch."""
    if len(reply.sender) <= SENDER_LENGTH:
        return True
    log.warning("reply from an over-long sender ignored", extra={"provider": provider})
    return False


def _code(receipt: DeliveryReceipt) -> str | None:
    """The provider's code as its column holds it (the timeline keeps it whole)."""
    return None if receipt.code is None else receipt.code[:CODE_LENGTH]


def _is_early(message: Message | None, receipt: DeliveryReceipt, channel: str) -> bool:
    """Whether the receipt may be for a send not recorded yet: its message is still queued
    or sending on this channel, or no message has the provider's id (yet)."""
    if message is None:
        return receipt.message_id is None and receipt.provider_message_id is not None
    return message.status in CLAIMABLE and message.channel == channel


def _early_row(provider: str, receipt: DeliveryReceipt, now: datetime) -> dict[str, Any]:
    return {
        "provider": provider,
        "message_id": receipt.message_id,
        "provider_message_id": receipt.provider_message_id,
        "delivered": receipt.delivered,
        "code": _code(receipt),
        "detail": receipt.detail,
        "occurred_at": receipt.occurred_at,
        "received_at": now,
    }


async def apply_early(
    session: AsyncSession, *, now: datetime, expire_before: datetime, limit: int
) -> tuple[Applied, int]:
    """Apply the early receipts whose message has been sent since, exactly as if they had
    come now (a failure falls back to the next channel), and delete them; then delete those
    received before ``expire_before`` that never found their message. (applied, expired)"""
    applied = Applied()
    ready = await repository.early_ready(session, limit=limit)
    await repository.lock_receipt_messages(session, ready)
    by_provider: dict[str, list[EarlyReceipt]] = {}
    for row in ready:
        by_provider.setdefault(row.provider, []).append(row)
    done: list[int] = []
    for provider, rows in by_provider.items():
        done += await _apply_early_of(session, provider, rows, now, applied)
    await repository.delete_early(session, done)
    expired = await repository.expire_early(session, received_before=expire_before)
    for provider, provider_message_id, message_id in expired:
        log.warning(
            "early receipt expired: its message was never sent",
            extra={
                "provider": provider,
                "provider_message_id": provider_message_id,
                "message_id": message_id,
            },
        )
    return applied, len(expired)


async def _apply_early_of(
    session: AsyncSession, provider: str, rows: list[EarlyReceipt], now: datetime, applied: Applied
) -> list[int]:
    """Apply the rows to their (locked) messages; the ids of the rows applied."""
    found = await repository.messages_for_receipts(
        session,
        provider=provider,
        message_ids=[r.message_id for r in rows if r.message_id],
        provider_ids=[r.provider_message_id for r in rows if r.provider_message_id],
    )
    by_ours = {m.id: m for m in found if m.status not in CLAIMABLE}
    by_theirs = {m.provider_message_id: m for m in found if m.provider == provider}
    done: list[int] = []
    for row in rows:
        message = by_ours.get(row.message_id or "") or by_theirs.get(row.provider_message_id or "")
        if message is None or message.status in CLAIMABLE:
            continue  # changed since it was matched: the next sweep sees it again
        receipt = DeliveryReceipt(
            delivered=row.delivered,
            provider_message_id=row.provider_message_id,
            message_id=row.message_id,
            code=row.code,
            detail=row.detail,
            occurred_at=row.occurred_at or row.received_at,
        )
        if _of_earlier_attempt(message, receipt, provider):
            await _note_earlier_attempt(session, message, receipt, provider, now, applied)
        else:
            await _apply_receipt(session, message, receipt, provider, now, applied)
        done.append(row.id)
    return done


def _of_earlier_attempt(message: Message, receipt: DeliveryReceipt, provider: str) -> bool:
    """Whether the receipt reports an attempt other than the send recorded on the message.
    Matched by our id (Aliyun echoes it for every attempt), a report on a retry's timed-out
    predecessor on the same provider differs only in the provider's id: applied, its
    failure would fail a delivered message and drop the real receipt as a duplicate."""
    if message.provider != provider:
        return True
    theirs, recorded = receipt.provider_message_id, message.provider_message_id
    return bool(theirs and recorded and theirs != recorded)


async def _note_earlier_attempt(
    session: AsyncSession,
    message: Message,
    receipt: DeliveryReceipt,
    provider: str,
    now: datetime,
    applied: Applied,
) -> None:
    """Put a report on an earlier attempt on the timeline, once per provider, id and outcome."""
    detail = {
        "provider": provider,
        "provider_message_id": receipt.provider_message_id,
        "delivered": receipt.delivered,
        "code": receipt.code,
        "detail": receipt.detail,
    }
    for noted in await messages.events_of(session, message.id):
        if noted.type == "earlier_attempt_receipt" and noted.detail == detail:
            applied.duplicates += 1
            return
    at = _reported(receipt.occurred_at, now)
    await messages.add_events(session, [event(message.id, "earlier_attempt_receipt", at, **detail)])
    applied.earlier += 1
    log.warning(
        "receipt for an earlier attempt: the message may have reached the customer twice",
        extra={"provider": provider, "message_id": message.id, "sent_by": message.provider},
    )


async def _apply_receipt(
    session: AsyncSession,
    message: Message,
    receipt: DeliveryReceipt,
    provider: str,
    now: datetime,
    applied: Applied,
) -> None:
    at = _reported(receipt.occurred_at, now)
    detail = {"provider": provider, "code": receipt.code, "detail": receipt.detail}
    if message.status != "sent":  # already delivered or failed: a duplicate or a late report
        applied.duplicates += 1
        return
    if receipt.delivered:
        message.status, message.delivered_at = "delivered", at
        message.delivery_code, message.updated_at = _code(receipt), now
        await messages.add_events(session, [event(message.id, "delivered", at, **detail)])
        applied.delivered += 1
        return
    applied.failed += 1
    reason = f"{message.channel}: provider reported {receipt.code or 'failure'}"
    if receipt.detail:
        reason += f" ({receipt.detail})"
    events = [event(message.id, "delivery_failed", at, **detail)]
    message.delivery_code, message.status_reason, message.updated_at = _code(receipt), reason, now
    next_index = message.channel_index + 1
    if next_index < len(message.channels):
        await _fall_back(session, message, next_index, reason, now, events)
        applied.requeue.append(message.id)
        return
    message.status = "failed"
    events.append(event(message.id, "failed", now, reason=reason))
    await messages.add_events(session, events)


async def _fall_back(
    session: AsyncSession,
    message: Message,
    next_index: int,
    reason: str,
    now: datetime,
    events: list[dict[str, Any]],
) -> None:
    nxt = message.channels[next_index]
    message.status, message.channel_index, message.channel = "queued", next_index, nxt
    message.channel_attempts, message.next_attempt_at, message.lease_until = 0, None, None
    events.append(event(message.id, "fallback", now, to=nxt, reason=reason))
    await messages.add_events(session, events)
    await messages.add_outbox(
        session, [{"message_id": message.id, "due_at": now, "enqueued_at": now}]
    )


def _reported(at: datetime | None, now: datetime) -> datetime:
    """A provider's time, never after ``now``: a reply dated in the future would win every
    later consent decision ("the later one wins") until that date."""
    return now if at is None else min(as_utc(at), now)


async def _store_replies(
    session: AsyncSession, provider: str, channel: str, replies: list[InboundReply], now: datetime
) -> None:
    """Store the replies, linked to the customers they came from; those of customers being
    erased as the erasure leaves replies (it has taken theirs already)."""
    owners = await customers.reply_owners(session, {r.sender for r in replies}, channel=channel)
    rows: list[dict[str, Any]] = []
    links: list[dict[str, str]] = []
    opt_outs: list[tuple[list[str], datetime]] = []
    for reply in replies:
        row = _reply_row(reply, provider, channel, now)
        found = owners.customers.get(reply.sender, [])
        if found and row["opt_out"]:
            opt_outs.append((found, row["received_at"]))
        stored = _as_erased(row) if reply.sender in owners.erased else row
        if stored is not None:
            rows.append(stored)
            links += [{"inbound_id": row["id"], "customer_id": c} for c in found]
    await repository.add_inbound(session, rows, links)
    if opt_outs:  # that channel's marketing consent
        source = f"{channel}_reply:{provider}"
        await customers.opt_out_by_reply(session, opt_outs, channel=channel, source=source)


def _reply_row(reply: InboundReply, provider: str, channel: str, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id("inb"),
        "provider": provider,
        "channel": channel,
        "sender": reply.sender,
        "sender_key": phone_key(reply.sender),
        "text": reply.text,
        "opt_out": is_opt_out(reply.text),
        "received_at": _reported(reply.received_at, now),
    }


def _as_erased(row: dict[str, Any]) -> dict[str, Any] | None:
    """A reply as an erasure leaves it (``erase_inbound``): an SMS opt-out reduced to a
    suppression record (the number's key and the time), anything else not at all."""
    if not row["opt_out"] or row["channel"] == "wechat":
        return None
    return row | {"sender": row["sender_key"], "text": ""}
