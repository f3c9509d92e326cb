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
# With a backlog in the queue, waiting messages are enqueued again only after this many
# redelivery graces: their jobs are most likely still queued, and copies would only pile up.
BACKLOG_PATIENCE = 4


async def sweep_once(runtime: Runtime) -> int:
    """Enqueue due messages that no live job holds: scheduled ones whose time has come,
    jobs lost with a crashed process or a wiped Redis, and expired leases."""
    now = utcnow()
    grace = timedelta(seconds=runtime.settings.queue.redelivery_grace)
    queue_is_empty = await runtime.queue.backlog() == 0
    async with runtime.sessionmaker() as session:
        ids = await repository.due_outbox(
            session,
            now=now,
            redeliver_before=now - grace,
            patient_before=now - grace * BACKLOG_PATIENCE,
            limit=SWEEP_BATCH,
            queue_is_empty=queue_is_empty,
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
