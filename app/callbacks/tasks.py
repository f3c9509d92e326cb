"""Background work: early receipts applied once their message is sent (the sweeper's)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from app.callbacks import service
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.callbacks")
EARLY_BATCH = 1000


async def sweep_early_receipts(runtime: Runtime) -> int:
    """Apply the early receipts whose message has been sent since and drop the expired
    ones (one transaction); messages a failure receipt moved to their next channel are
    enqueued after the commit. How many receipts were applied."""
    now = utcnow()
    ttl = timedelta(seconds=runtime.settings.queue.early_receipt_ttl)
    async with runtime.sessionmaker() as session:
        applied, expired = await service.apply_early(
            session, now=now, expire_before=now - ttl, limit=EARLY_BATCH
        )
        await session.commit()
    if applied.requeue:
        await runtime.queue.enqueue(applied.requeue)
    count = applied.delivered + applied.failed + applied.duplicates
    if count or expired:
        log.info(
            "early receipts applied",
            extra={
                "delivered": applied.delivered,
                "failed": applied.failed,
                "duplicates": applied.duplicates,
                "expired": expired,
            },
        )
    return count
