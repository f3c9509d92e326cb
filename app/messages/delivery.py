"""The worker side of the pipeline: claim a job's messages with a lease (one transaction),
send them concurrently through the channel plugins, and record every outcome (grouped
transactions): finished, retry later, next channel, or failed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from app.messages import consent_check, repository
from app.messages.outcomes import RATE_LIMITED, Attempt, Claimed, Outcome, decide, event
from app.timeutil import utcnow
from channels.base import CONTACT_FIELD
from channels.errors import (
    ChannelError,
    ContentRefused,
    PermanentChannelError,
    ProviderFault,
    RecipientUnreachable,
    TransientChannelError,
)
from channels.ratelimit import RateLimitExceeded
from channels.registry import ProviderSlot

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.delivery")

# Outcomes waiting for their transaction beyond which a job waits for its own to be written
# before it ends (and arq starts another): the backpressure of a slow database.
RECORDING_BACKLOG = 2_000


async def process_many(
    runtime: Runtime, ids: list[str], *, step: int | None = None, senders: int | None = None
) -> None:
    """Send a job's messages ``step`` (default: ``queue.concurrency``) at a time, each starting
    as soon as another finishes (``senders``: fewer at a time, in slices of ``step``). They
    are claimed in slices of that size, a couple of slices ahead of the one being sent
    (claims made at the same time share one transaction): claims do not hold the sends up,
    and a message's send starts well within its claim's lease.

    Each outcome is handed to the recorder as soon as it is known (outcomes finishing
    together share one transaction; a sender does not wait for it): a fast message's
    provider id is stored at once, before its delivery report can arrive, whatever its
    slower neighbours do. The job ends once every send is done; its outcomes are awaited in
    the background, unless the recorder has a backlog."""
    step = step or runtime.settings.queue.concurrency
    claims = _Claims(runtime, [ids[i : i + step] for i in range(0, len(ids), step)])
    outcomes: list[Outcome] = []
    recorded: list[asyncio.Future[bool]] = []

    async def sender() -> None:
        while (claimed := await claims.next()) is not None:
            outcome = await _send(runtime, *claimed)
            outcomes.append(outcome)
            recorded.append(runtime.record_outcome(outcome))

    await asyncio.gather(*(sender() for _ in range(min(senders or step, len(ids)))))
    settling = _settle(runtime, outcomes, recorded)
    if runtime.recording_backlog > RECORDING_BACKLOG:
        await settling  # the database lags: no new job until this one is written
    else:
        runtime.settle_later(settling)  # the next job need not wait for this one's commit


class _Claims:
    """The job's claimed messages, slice by slice, each with its deadline (every send ends
    within its claim's lease: one outliving it would race the next claim). ``LOOKAHEAD``
    slices are claimed ahead of the one being sent, so a slice's claim has that many rounds
    of sends to finish in, and a message waits at most about that many rounds between its
    claim and its send."""

    LOOKAHEAD = 2

    def __init__(self, runtime: Runtime, slices: list[list[str]]) -> None:
        self._runtime = runtime
        self._slices = iter(slices)
        self._current: Iterator[Claimed] = iter(())
        self._deadline = 0.0
        self._upcoming: deque[asyncio.Future[tuple[list[Claimed], float]]] = deque()
        for _ in range(self.LOOKAHEAD):
            self._claim_next()

    async def next(self) -> tuple[Claimed, float] | None:
        while (message := next(self._current, None)) is None:
            if not self._upcoming:
                return None
            upcoming = self._upcoming[0]
            messages, deadline = await upcoming
            if self._upcoming and self._upcoming[0] is upcoming:  # the first sender back
                self._upcoming.popleft()
                self._current, self._deadline = iter(messages), deadline
                self._claim_next()
        return message, self._deadline

    def _claim_next(self) -> None:
        ids = next(self._slices, None)
        if ids is not None:
            self._upcoming.append(asyncio.ensure_future(self._claim(ids)))

    async def _claim(self, ids: list[str]) -> tuple[list[Claimed], float]:
        try:
            messages = await consent_check.recheck(self._runtime, await self._runtime.claim(ids))
        except Exception:
            # Leases expire and the sweeper hands these messages out again.
            log.exception("claim failed", extra={"messages": len(ids)})
            return [], 0.0
        lease = self._runtime.settings.queue.lease_seconds
        return messages, asyncio.get_running_loop().time() + lease * 0.8


async def _settle(
    runtime: Runtime, outcomes: list[Outcome], recorded: list[asyncio.Future[bool]]
) -> None:
    """Once the outcomes are written, requeue the retries among those applied."""
    applied = await asyncio.gather(*recorded, return_exceptions=True)
    for result in applied:
        if isinstance(result, BaseException):  # the outcome is lost: the lease will lapse
            log.error("recording outcomes failed", exc_info=result)
            break
    await _requeue(runtime, [o for o, ok in zip(outcomes, applied, strict=True) if ok is True])


async def _send(runtime: Runtime, message: Claimed, deadline: float) -> Outcome:
    try:
        async with asyncio.timeout_at(deadline):
            attempts = await _attempt(runtime, message, deadline)
    except TimeoutError:
        attempts = [_failed(message, "no answer within the lease", "lease_timeout")]
    except Exception:
        log.exception("attempt failed unexpectedly", extra={"message_id": message.id})
        attempts = [_failed(message, "internal error while sending", "internal_error")]
    now = utcnow()
    outcome = decide(message, attempts, runtime.settings.retry, now)
    if message.patch_dropped:
        channel = message.channels[message.channel_index]
        reason = f"the customer opted out of marketing on {channel} after it was accepted"
        outcome.events.insert(
            0, event(message.id, "patch_dropped", now, channel=channel, reason=reason)
        )
    return outcome


def _failed(message: Claimed, detail: str, code: str) -> Attempt:
    channel = message.channels[message.channel_index]
    error = TransientChannelError(detail, code=code)
    return Attempt(channel=channel, provider=None, latency_ms=0.0, error=error)


async def claim(runtime: Runtime, ids: list[str]) -> list[Claimed]:
    """Lease the messages (one transaction) and put `sending` on their timelines."""
    now = utcnow()
    lease = timedelta(seconds=runtime.settings.queue.lease_seconds)
    async with runtime.sessionmaker() as session:
        messages = await repository.claim_for_sending(
            session, ids, worker=runtime.worker_id, now=now, lease_until=now + lease
        )
        await session.commit()
    return messages


async def _attempt(
    runtime: Runtime, message: Claimed, deadline: float | None = None
) -> list[Attempt]:
    """Try the channel's providers in routing order: on a transient error or an open
    circuit, fail over to the next one. Returns every attempt; the last one decides.
    ``deadline`` (the event loop's time) is when the send must be over (its lease)."""
    channel = message.channels[message.channel_index]
    if message.refusal is not None:
        refused = PermanentChannelError(message.refusal, code=consent_check.OPTED_OUT)
        return [Attempt(channel=channel, provider=None, latency_ms=0.0, error=refused)]
    if message.unchecked:
        later = TransientChannelError(
            "marketing consent could not be checked again", code=consent_check.UNCHECKED
        )
        return [Attempt(channel=channel, provider=None, latency_ms=0.0, error=later)]
    contact = message.recipient.get(CONTACT_FIELD[channel])
    error: ChannelError | None = None
    if not contact:
        error = RecipientUnreachable(f"no {CONTACT_FIELD[channel]} for this customer")
    slots = runtime.providers.route(channel)
    if not slots:
        error = PermanentChannelError(f"no provider configured for {channel}")
    if error is not None or not contact:
        return [Attempt(channel=channel, provider=None, latency_ms=0.0, error=error)]
    attempts: list[Attempt] = []
    for slot in slots:
        attempt = await _attempt_with(runtime, slot, message, channel, contact, deadline)
        attempts.append(attempt)
        if attempt.error is None or not _fails_over(attempt.error):
            break
    return attempts


async def _attempt_with(
    runtime: Runtime,
    slot: ProviderSlot,
    message: Claimed,
    channel: str,
    contact: str,
    deadline: float | None,
) -> Attempt:
    if slot.circuit.refuses():  # before the rate wait: a skipped provider costs no slot
        return _circuit_open(channel, slot)
    waited = await _wait_for_rate(runtime, slot, deadline)
    if waited is not None:
        return Attempt(channel, slot.name, 0.0, error=waited)
    ticket = slot.circuit.allow()
    if ticket is None:  # the half-open probe went to another send meanwhile
        return _circuit_open(channel, slot)
    started = time.perf_counter()
    failed = True  # recorded in `finally`, so a half-open probe is always released
    try:
        result = await slot.provider.send(
            to=contact,
            content=message.content[channel],
            idempotency_key=f"{message.id}:{channel}",
            message_id=message.id,
        )
        failed = False
    except ChannelError as exc:
        failed = _is_provider_failure(exc)  # a refusal of the account counts against it too
        return Attempt(channel, slot.name, _ms_since(started), error=exc)
    except Exception as exc:  # a provider's bug must not take the job down with it
        log.exception("provider raised unexpectedly", extra={"provider": slot.name})
        error = TransientChannelError(
            f"provider error: {type(exc).__name__}", code="internal_error"
        )
        return Attempt(channel, slot.name, _ms_since(started), error=error)
    finally:
        slot.circuit.record(ticket, failed=failed)
    return Attempt(channel, slot.name, _ms_since(started), result=result, cost=slot.account.cost)


def _circuit_open(channel: str, slot: ProviderSlot) -> Attempt:
    error = TransientChannelError("circuit open: provider failing", code="circuit_open")
    return Attempt(channel, slot.name, 0.0, error=error)


async def _wait_for_rate(
    runtime: Runtime, slot: ProviderSlot, deadline: float | None
) -> ChannelError | None:
    """Wait for the provider's rate limit; an error when the slot is too far away: beyond
    the limiter's longest wait, or too late to send before the deadline. Such a message is
    retried later without using up an attempt; had it waited, its lease would have lapsed
    mid-wait and counted as a failed attempt."""
    rate = slot.rate
    if rate is None:
        return None
    max_wait = None
    if deadline is not None:
        left = deadline - asyncio.get_running_loop().time()
        max_wait = left - slot.provider.send_timeout
    try:
        await runtime.providers.limiter.acquire(
            slot.name, rate=rate[0], burst=rate[1], max_wait=max_wait
        )
    except RateLimitExceeded as exc:
        return TransientChannelError(str(exc), code=RATE_LIMITED)
    except Exception:  # e.g. Redis unreachable: better retry later than overrun the provider
        log.exception("rate limiter unavailable", extra={"provider": slot.name})
        return TransientChannelError("rate limiter unavailable", code="rate_limiter")
    return None


def _fails_over(error: ChannelError) -> bool:
    """A transient error or a refusal of the account (no balance, credentials rejected, the
    template not approved there): not about the recipient, so the next provider may help."""
    return error.transient or isinstance(error, ProviderFault)


def _is_provider_failure(error: ChannelError) -> bool:
    """What counts against the account's circuit: what fails over, but a refusal of one
    content (ContentRefused), as the account still serves other content."""
    return _fails_over(error) and not isinstance(error, ContentRefused)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _requeue(runtime: Runtime, outcomes: list[Outcome]) -> None:
    by_delay: dict[float, list[str]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.requeue_delay is not None:
            by_delay[round(outcome.requeue_delay, 2)].append(outcome.message_id)
    for delay, ids in by_delay.items():
        await runtime.queue.enqueue(ids, delay=delay)
