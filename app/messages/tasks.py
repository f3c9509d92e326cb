"""Background work: the sweeper that re-enqueues whatever the queue may have lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from app.callbacks.tasks import EARLY_BATCH, sweep_early_receipts
from app.idempotency.tasks import forget_old
from app.messages import repository
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.sweeper")
SWEEP_BATCH = 1000


async def sweep_once(runtime: Runtime) -> int:
    """Enqueue due messages that no live job holds: scheduled ones whose time has come,
    jobs lost with a crashed process or a wiped Redis, and expired leases.

    Jobs are taken oldest first, so a message is still in the queue when its job was
    enqueued after the oldest job still waiting; one enqueued more than the redelivery grace
    before that job (or before now, with nothing waiting) and neither sent nor leased had
    its job taken and lost. A long queue (a campaign held back by a provider's rate limit)
    is thereby never copied into itself."""
    now = utcnow()
    grace = timedelta(seconds=runtime.settings.queue.redelivery_grace)
    waiting_since = await runtime.queue.waiting_since()
    lost_before = (now if waiting_since is None else min(now, waiting_since)) - grace
    async with runtime.sessionmaker() as session:
        ids = await repository.due_outbox(
            session,
            now=now,
            lost_before=lost_before,
            orphaned_before=now - grace,
            limit=SWEEP_BATCH,
        )
        if ids:
            await repository.mark_enqueued(session, ids, now)
        await session.commit()
    if ids:
        await runtime.queue.enqueue(ids)
        log.info("sweeper enqueued messages", extra={"count": len(ids)})
    return len(ids)


async def sweep_forever(runtime: Runtime) -> None:
    """Sweep, apply the delivery receipts that came before their send was recorded (off the
    worker's path: it pays no query for them), and forget old Idempotency-Key records."""
    interval = runtime.settings.queue.sweep_interval
    while True:
        swept = await _guarded(sweep_once, runtime, "sweep failed")
        applied = await _guarded(sweep_early_receipts, runtime, "early receipts failed")
        await _guarded(forget_old, runtime, "forgetting old idempotency keys failed")
        if swept < SWEEP_BATCH and applied < EARLY_BATCH:
            await asyncio.sleep(interval)


async def _guarded(
    step: Callable[[Runtime], Awaitable[int]], runtime: Runtime, failure: str
) -> int:
    try:
        return await step(runtime)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(failure)
        return 0
