"""Forgetting old Idempotency-Key records of the creating POSTs (a client retries within
minutes; the records only need to outlive that, not the resources they created)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

from app.idempotency import repository
from app.ids import first_id_at
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.runtime import Runtime

FORGET_BATCH = 1000
EVERY_SECONDS = 3600.0  # the sweeper runs every few seconds; this needs to run hourly
_next_run = 0.0


async def forget_old(runtime: Runtime) -> int:
    """Delete records older than ``ICC_API__IDEMPOTENCY_DAYS``, at most once an hour per
    process and a batch at a time; how many went."""
    global _next_run
    if time.monotonic() < _next_run:
        return 0
    cutoff = utcnow() - timedelta(days=runtime.settings.api.idempotency_days)
    bound = first_id_at("idem", int(cutoff.timestamp() * 1000))
    async with runtime.sessionmaker() as session:
        gone = await repository.forget_before(session, bound_id=bound, limit=FORGET_BATCH)
        await session.commit()
    if gone < FORGET_BATCH:  # caught up: rest until the next hour
        _next_run = time.monotonic() + EVERY_SECONDS
    return gone
