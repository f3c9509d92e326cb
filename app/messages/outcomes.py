"""What an attempt means for a message: finished, retry later, next channel, or failed.
Pure: the worker applies the returned changes in bulk."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from app.settings import RetrySettings
from channels.base import SendResult
from channels.errors import ChannelError


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a worker needs of a message it has claimed (read from the claim's RETURNING,
    not loaded as an ORM object: claims are on the hot path)."""

    id: str
    channels: list[str]
    channel_index: int
    recipient: dict[str, str]
    content: dict[str, dict[str, Any]]
    attempts: int  # after the claim's increment: the claim's fencing token
    channel_attempts: int
    customer_id: str = ""
    scenario: str = ""
    patched: bool = False  # carries a marketing patch on some channel (messages.unpatched)
    # set by app/messages/consent_check.py when marketing consent was withdrawn since:
    refusal: str | None = None  # why this marketing message does not go on its channel
    patch_dropped: bool = False  # the content goes without its patch
    unchecked: bool = False  # consent could not be read again: try later


@dataclass(frozen=True)
class Attempt:
    channel: str
    provider: str | None
    latency_ms: float
    result: SendResult | None = None
    error: ChannelError | None = None
    cost: Decimal | None = None


@dataclass
class Outcome:
    """Changes to write for one message after an attempt."""

    message_id: str
    values: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False  # the outbox row goes
    due_at: datetime | None = None  # else the outbox row is due again then
    requeue_delay: float | None = None  # enqueue again after this many seconds
    claim: int = 0  # the message's attempt count when claimed: the fencing token


RATE_LIMITED = "rate_limited"  # the code of a send that found no rate-limit slot in time
RATE_LIMIT_RETRY_SECONDS = 5.0


def backoff_delay(attempt: int, retry: RetrySettings) -> float:
    """Exponential backoff with jitter: half fixed, half random, capped."""
    ceiling = min(retry.max_delay, retry.base_delay * 2 ** max(attempt - 1, 0))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def event(message_id: str, type_: str, at: datetime, **detail: Any) -> dict[str, Any]:
    return {"message_id": message_id, "type": type_, "at": at, "detail": detail}


def sending_event(message: Claimed, at: datetime) -> dict[str, Any]:
    """A claim's event (also written in SQL by pipeline_pg.claim_for_sending)."""
    channel = message.channels[message.channel_index]
    return event(message.id, "sending", at, channel=channel, attempt=message.attempts)


def _failed_event(message_id: str, attempt: Attempt, now: datetime) -> dict[str, Any]:
    error = attempt.error
    assert error is not None
    return event(
        message_id,
        "attempt_failed",
        now,
        channel=attempt.channel,
        provider=attempt.provider,
        code=error.code,
        error=error.detail,
        transient=error.transient,
        latency_ms=attempt.latency_ms,
    )


def decide(
    message: Claimed, attempts: list[Attempt], retry: RetrySettings, now: datetime
) -> Outcome:
    """The outcome of one round on the current channel. Every provider tried is on the
    timeline; the last attempt decides (the earlier ones failed over)."""
    *earlier, attempt = attempts
    failovers: list[dict[str, Any]] = []
    for tried in earlier:
        failovers.append(_failed_event(message.id, tried, now))
        failovers.append(event(message.id, "failover", now, provider=tried.provider))
    outcome = _decide_last(message, attempt, retry, now)
    outcome.events[:0] = failovers
    outcome.claim = message.attempts
    return outcome


def _decide_last(
    message: Claimed, attempt: Attempt, retry: RetrySettings, now: datetime
) -> Outcome:
    if attempt.result is not None:
        return _success(message, attempt, attempt.result, now)
    assert attempt.error is not None
    error = attempt.error
    failed = _failed_event(message.id, attempt, now)
    own_limit = error.code == RATE_LIMITED
    if error.transient and (message.channel_attempts < retry.max_attempts or own_limit):
        return _retry(message, attempt, failed, retry, now)
    reason = f"{attempt.channel}: {error.detail}"
    if error.transient:
        reason += f" (gave up after {message.channel_attempts} attempts)"
    return _fall_back_or_fail(message, failed, reason, now)


def _success(message: Claimed, attempt: Attempt, result: SendResult, now: datetime) -> Outcome:
    values: dict[str, Any] = {
        "status": "delivered" if result.delivered else "sent",
        "status_reason": None,
        "channel": attempt.channel,
        "provider": attempt.provider,
        "provider_message_id": result.provider_message_id,
        "sent_at": now,
        "cost": attempt.cost,
        "lease_until": None,
        "updated_at": now,
    }
    events = [
        event(
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
        values["delivered_at"] = now
        events.append(event(message.id, "delivered", now, provider=attempt.provider))
    return Outcome(message.id, values, events, finished=True)


def _retry(
    message: Claimed,
    attempt: Attempt,
    failed: dict[str, Any],
    retry: RetrySettings,
    now: datetime,
) -> Outcome:
    delay = backoff_delay(message.channel_attempts, retry)
    values: dict[str, Any] = {
        "status": "retrying",
        "lease_until": None,
        "updated_at": now,
        "channel": attempt.channel,
        "provider": attempt.provider,
        "status_reason": f"{attempt.channel}: {failed['detail']['error']}",
    }
    if attempt.error is not None and attempt.error.code == RATE_LIMITED:
        # Our own limit, not the provider's failure: wait for a slot without using up one
        # of the channel's attempts ("bursts wait, they do not fail").
        delay = max(delay, RATE_LIMIT_RETRY_SECONDS)
        values["channel_attempts"] = message.channel_attempts - 1
    due = now + timedelta(seconds=delay)
    values["next_attempt_at"] = due
    scheduled = event(
        message.id,
        "retry_scheduled",
        now,
        channel=attempt.channel,
        next_attempt_at=due.isoformat(),
        delay_s=round(delay, 3),
    )
    return Outcome(message.id, values, [failed, scheduled], due_at=due, requeue_delay=delay)


def _fall_back_or_fail(
    message: Claimed, failed: dict[str, Any], reason: str, now: datetime
) -> Outcome:
    next_index = message.channel_index + 1
    if next_index >= len(message.channels):
        values: dict[str, Any] = {
            "status": "failed",
            "status_reason": reason,
            "lease_until": None,
            "updated_at": now,
        }
        return Outcome(
            message.id,
            values,
            [failed, event(message.id, "failed", now, reason=reason)],
            finished=True,
        )
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
    fallback = event(message.id, "fallback", now, to=nxt, reason=reason)
    return Outcome(message.id, values, [failed, fallback], due_at=now, requeue_delay=0.0)
