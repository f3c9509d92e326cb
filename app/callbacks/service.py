"""Apply what a provider reported: delivered, failed (then the next channel, if any), and
customers' replies. Receipts are idempotent; unknown messages are acknowledged and ignored."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks import repository
from app.customers import service as customers
from app.ids import new_id
from app.messages import repository as messages
from app.messages.models import Message
from app.messages.outcomes import event
from app.timeutil import utcnow
from channels.base import CallbackResult, DeliveryReceipt, InboundReply

log = logging.getLogger("icc.callbacks")

OPT_OUT_KEYWORDS = frozenset({"TD", "T", "N", "R", "退订", "取消", "拒收", "UNSUBSCRIBE", "STOP"})


@dataclass
class Applied:
    delivered: int = 0
    failed: int = 0
    duplicates: int = 0
    unknown: int = 0
    replies: int = 0
    requeue: list[str] = field(default_factory=list)  # messages falling back to a next channel


def is_opt_out(text: str) -> bool:
    return text.strip().upper() in OPT_OUT_KEYWORDS


async def apply(
    session: AsyncSession, *, provider: str, channel: str, result: CallbackResult
) -> Applied:
    applied = Applied()
    found = await repository.messages_for_receipts(
        session,
        provider=provider,
        message_ids=[r.message_id for r in result.receipts if r.message_id],
        provider_ids=[r.provider_message_id for r in result.receipts if r.provider_message_id],
    )
    by_ours = {m.id: m for m in found}
    by_theirs = {m.provider_message_id: m for m in found if m.provider_message_id}
    now = utcnow()
    for receipt in result.receipts:
        message = by_ours.get(receipt.message_id or "") or by_theirs.get(
            receipt.provider_message_id or ""
        )
        if message is None:
            applied.unknown += 1
            log.info(
                "receipt for an unknown message ignored",
                extra={"provider": provider, "provider_message_id": receipt.provider_message_id},
            )
            continue
        await _apply_receipt(session, message, receipt, provider, now, applied)
    await _store_replies(session, provider, channel, result.replies, now)
    applied.replies = len(result.replies)
    return applied


async def _apply_receipt(
    session: AsyncSession,
    message: Message,
    receipt: DeliveryReceipt,
    provider: str,
    now: datetime,
    applied: Applied,
) -> None:
    at = receipt.occurred_at or now
    detail = {"provider": provider, "code": receipt.code, "detail": receipt.detail}
    if message.status != "sent":  # already delivered or failed: a duplicate or a late report
        applied.duplicates += 1
        return
    if receipt.delivered:
        message.status, message.delivered_at = "delivered", at
        message.delivery_code, message.updated_at = receipt.code, now
        await messages.add_events(session, [event(message.id, "delivered", at, **detail)])
        applied.delivered += 1
        return
    applied.failed += 1
    reason = f"{message.channel}: provider reported {receipt.code or 'failure'}"
    if receipt.detail:
        reason += f" ({receipt.detail})"
    events = [event(message.id, "delivery_failed", at, **detail)]
    message.delivery_code, message.status_reason, message.updated_at = receipt.code, reason, now
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


async def _store_replies(
    session: AsyncSession, provider: str, channel: str, replies: list[InboundReply], now: datetime
) -> None:
    rows: list[dict[str, Any]] = [
        {
            "id": new_id("inb"),
            "provider": provider,
            "channel": channel,
            "sender": r.sender,
            "text": r.text,
            "opt_out": is_opt_out(r.text),
            "received_at": r.received_at or now,
        }
        for r in replies
    ]
    await repository.add_inbound(session, rows)
    opt_outs = [(r["sender"], r["received_at"]) for r in rows if r["opt_out"]]
    if channel == "sms" and opt_outs:  # "TD" revokes the sender's SMS marketing consent
        await customers.opt_out_by_sms_reply(session, opt_outs, source=f"sms_reply:{provider}")
