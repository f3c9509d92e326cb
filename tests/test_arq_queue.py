"""arq's queue as the sweeper sees it: when the oldest job that no worker runs was enqueued."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from app.queue.arq_backend import ArqQueue


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[ArqQueue]:
    queue = ArqQueue(redis_url, queue_name=f"icc:test:{uuid.uuid4().hex}", chunk_size=200)
    await queue.start()
    yield queue
    members = await queue.pool.zrange(queue._queue_name, 0, -1)
    keys = [f"arq:{kind}:{m.decode()}" for m in members for kind in ("job", "in-progress")]
    await queue.pool.delete(queue._queue_name, *keys)
    await queue.close()


async def test_waiting_since_is_the_oldest_due_job_no_worker_runs(queue: ArqQueue) -> None:
    assert await queue.waiting_since() is None
    before = datetime.now(UTC)
    await queue.enqueue(["m1"])
    await asyncio.sleep(0.05)
    await queue.enqueue(["m2"])
    await queue.enqueue(["m3"], delay=60)  # a retry later: not due, not waiting yet
    after = datetime.now(UTC)
    jobs = await queue.pool.zrange(queue._queue_name, 0, -1, withscores=True)
    (first, first_ms), (second, second_ms), (_, later_ms) = jobs
    assert later_ms > time.time() * 1000 + 50_000
    oldest = await queue.waiting_since()
    assert oldest is not None
    assert before.timestamp() - 0.01 <= oldest.timestamp() <= after.timestamp()
    assert oldest.timestamp() == pytest.approx(first_ms / 1000)
    # a worker runs the first job (arq keeps it in the queue while it runs)
    await queue.pool.set(f"arq:in-progress:{first.decode()}", b"1", px=60_000)
    since = await queue.waiting_since()
    assert since is not None
    assert since.timestamp() == pytest.approx(second_ms / 1000)
    # both run (or their worker was killed and the in-progress keys outlive it): none waits
    await queue.pool.set(f"arq:in-progress:{second.decode()}", b"1", px=60_000)
    assert await queue.waiting_since() is None
    await queue.pool.zrem(queue._queue_name, first, second)  # both done
    assert await queue.waiting_since() is None  # the delayed job is not due


async def test_with_more_running_jobs_than_it_looks_at_it_gives_a_lower_bound(
    queue: ArqQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.queue.arq_backend.PEEK", 2)
    for i in range(3):
        await queue.enqueue([f"m{i}"])
        await asyncio.sleep(0.01)
    jobs = await queue.pool.zrange(queue._queue_name, 0, -1, withscores=True)
    for job_id, _ in jobs[:2]:
        await queue.pool.set(f"arq:in-progress:{job_id.decode()}", b"1", px=60_000)
    since = await queue.waiting_since()
    assert since is not None
    assert since.timestamp() == pytest.approx(jobs[1][1] / 1000)  # not the third's, unseen
