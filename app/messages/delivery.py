"""The worker side of the pipeline: claim a message with a lease, send it through the
channel plugin, record the attempt, then finish, retry later, or fall back to the next
channel in the scenario's order."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.messages import repository
from app.messages.models import Message
from app.settings import RetrySettings
from app.timeutil import utcnow
from channels.base import CONTACT_FIELD, SendResult
from channels.errors import ChannelError, PermanentChannelError, RecipientUnreachable

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.delivery")


@dataclass(frozen=True)
class Attempt:
    channel: str
    provider: str | None
    latency_ms: float
    result: SendResult | None = None
    error: ChannelError | None = None


def backoff_delay(attempt: int, retry: RetrySettings) -> float:
    """Exponential backoff with jitter: half fixed, half random, capped."""
    ceiling = min(retry.max_delay, retry.base_delay * 2 ** max(attempt - 1, 0))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


async def process_many(runtime: Runtime, ids: list[str]) -> None:
    limit = asyncio.Semaphore(runtime.settings.queue.concurrency)

    async def one(message_id: str) -> None:
        async with limit:
            try:
                await process_one(runtime, message_id)
            except Exception:
                # The lease expires and the sweeper hands the message out again.
                log.exception("processing failed", extra={"message_id": message_id})

    await asyncio.gather(*(one(i) for i in ids))


async def process_one(runtime: Runtime, message_id: str) -> None:
    now = utcnow()
    lease = timedelta(seconds=runtime.settings.queue.lease_seconds)
    async with runtime.sessionmaker() as session:
        message = await repository.claim(
            session, message_id, worker=runtime.worker_id, now=now, lease_until=now + lease
        )
        if message is None:
            await session.rollback()
            return  # done, not due, or leased by another worker
        channel = message.channels[message.channel_index]
        await repository.add_events(
            session,
            [_event(message.id, "sending", now, channel=channel, attempt=message.attempts)],
        )
        await session.commit()
    attempt = await _attempt(runtime, message, channel)
    async with runtime.sessionmaker() as session:
        delay = await _record(session, runtime, message, attempt)
        await session.commit()
    if delay is not None:
        await runtime.queue.enqueue([message.id], delay=delay)


async def _attempt(runtime: Runtime, message: Message, channel: str) -> Attempt:
    providers = runtime.providers.providers_for(channel)
    contact = message.recipient.get(CONTACT_FIELD[channel])
    started = time.perf_counter()
    if not providers:
        error: ChannelError = PermanentChannelError(f"no provider configured for {channel}")
        return Attempt(channel=channel, provider=None, latency_ms=0.0, error=error)
    provider = providers[0]
    try:
        if not contact:
            raise RecipientUnreachable(f"no {CONTACT_FIELD[channel]} for this customer")
        result = await provider.send(
            to=contact,
            content=message.content[channel],
            idempotency_key=f"{message.id}:{channel}",
            message_id=message.id,
        )
    except ChannelError as exc:
        return Attempt(channel, provider.account, _ms_since(started), error=exc)
    return Attempt(channel, provider.account, _ms_since(started), result=result)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _event(message_id: str, type_: str, at: datetime, **detail: Any) -> dict[str, Any]:
    return {"message_id": message_id, "type": type_, "at": at, "detail": detail}


async def _record(
    session: AsyncSession, runtime: Runtime, message: Message, attempt: Attempt
) -> float | None:
    """Write the attempt's outcome; return a delay (seconds) if the message must be queued again."""
    if attempt.result is not None:
        await _record_success(session, runtime, message, attempt, attempt.result)
        return None
    assert attempt.error is not None
    now = utcnow()
    error = attempt.error
    failed = _event(
        message.id,
        "attempt_failed",
        now,
        channel=attempt.channel,
        provider=attempt.provider,
        code=error.code,
        error=error.detail,
        transient=error.transient,
        latency_ms=attempt.latency_ms,
    )
    retry = runtime.settings.retry
    if error.transient and message.channel_attempts < retry.max_attempts:
        return await _schedule_retry(session, runtime, message, attempt, failed, now)
    reason = f"{attempt.channel}: {error.detail}"
    if error.transient:
        reason += f" (gave up after {message.channel_attempts} attempts)"
    return await _fall_back_or_fail(session, runtime, message, failed, reason, now)


async def _record_success(
    session: AsyncSession, runtime: Runtime, message: Message, attempt: Attempt, result: SendResult
) -> None:
    now = utcnow()
    status = "delivered" if result.delivered else "sent"
    values: dict[str, Any] = {
        "status": status,
        "status_reason": None,
        "channel": attempt.channel,
        "provider": attempt.provider,
        "provider_message_id": result.provider_message_id,
        "sent_at": now,
        "lease_until": None,
        "updated_at": now,
    }
    if result.delivered:
        values["delivered_at"] = now
    if not await repository.update_if_leased(
        session, message.id, worker=runtime.worker_id, values=values
    ):
        return
    events = [
        _event(
            message.id,
            "sent",
            now,
            channel=attempt.channel,
            provider=attempt.provider,
            provider_message_id=result.provider_message_id,
            latency_ms=attempt.latency_ms,
        )
    ]
    if result.delivered:
        events.append(_event(message.id, "delivered", now, provider=attempt.provider))
    await repository.add_events(session, events)
    await repository.finish_outbox(session, message.id)


async def _schedule_retry(
    session: AsyncSession,
    runtime: Runtime,
    message: Message,
    attempt: Attempt,
    failed: dict[str, Any],
    now: datetime,
) -> float | None:
    delay = backoff_delay(message.channel_attempts, runtime.settings.retry)
    due = now + timedelta(seconds=delay)
    values = {
        "status": "retrying",
        "next_attempt_at": due,
        "lease_until": None,
        "updated_at": now,
        "channel": attempt.channel,
        "provider": attempt.provider,
        "status_reason": f"{attempt.channel}: {failed['detail']['error']}",
    }
    if not await repository.update_if_leased(
        session, message.id, worker=runtime.worker_id, values=values
    ):
        return None
    retry_event = _event(
        message.id,
        "retry_scheduled",
        now,
        channel=attempt.channel,
        next_attempt_at=due.isoformat(),
        delay_s=round(delay, 3),
    )
    await repository.add_events(session, [failed, retry_event])
    # enqueued_at = due: the sweeper re-sends only if the delayed job is lost
    await repository.reschedule_outbox(session, message.id, due_at=due, enqueued_at=due)
    return delay


async def _fall_back_or_fail(
    session: AsyncSession,
    runtime: Runtime,
    message: Message,
    failed: dict[str, Any],
    reason: str,
    now: datetime,
) -> float | None:
    next_index = message.channel_index + 1
    if next_index >= len(message.channels):
        values: dict[str, Any] = {
            "status": "failed",
            "status_reason": reason,
            "lease_until": None,
            "updated_at": now,
        }
        if not await repository.update_if_leased(
            session, message.id, worker=runtime.worker_id, values=values
        ):
            return None
        await repository.add_events(
            session, [failed, _event(message.id, "failed", now, reason=reason)]
        )
        await repository.finish_outbox(session, message.id)
        return None
    nxt = message.channels[next_index]
    values = {
        "status": "queued",
        "channel_index": next_index,
        "channel": nxt,
        "channel_attempts": 0,
        "next_attempt_at": None,
        "lease_until": None,
        "status_reason": reason,
        "updated_at": now,
    }
    if not await repository.update_if_leased(
        session, message.id, worker=runtime.worker_id, values=values
    ):
        return None
    await repository.add_events(
        session, [failed, _event(message.id, "fallback", now, to=nxt, reason=reason)]
    )
    await repository.reschedule_outbox(session, message.id, due_at=now, enqueued_at=now)
    return 0.0
