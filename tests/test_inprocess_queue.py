"""The embedded queue's consumers: jobs that arrive close together are sent as one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from app.queue.inprocess import InProcessQueue


async def _until(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


class Recorder:
    def __init__(self) -> None:
        self.jobs: list[list[str]] = []
        self.started: list[float] = []

    async def __call__(self, ids: list[str]) -> None:
        self.started.append(time.monotonic())
        self.jobs.append(ids)
        await asyncio.sleep(0.05)  # a send in progress keeps its consumer busy


async def test_jobs_arriving_while_a_consumer_gathers_merge_into_one() -> None:
    handler = Recorder()
    queue = InProcessQueue(handler, workers=4, chunk_size=200, linger=1.0)
    await queue.start()
    try:
        for i in range(5):  # five accepted groups, 10 ms apart: idle consumers are waiting
            await queue.enqueue([f"m{i}a", f"m{i}b"])
            await asyncio.sleep(0.01)
        await _until(lambda: bool(handler.jobs), timeout=3.0)
        assert handler.jobs == [[f"m{i}{s}" for i in range(5) for s in "ab"]]
    finally:
        await queue.close()


async def test_a_lone_job_waits_no_longer_than_the_linger() -> None:
    handler = Recorder()
    queue = InProcessQueue(handler, workers=2, chunk_size=200, linger=0.05)
    await queue.start()
    try:
        enqueued = time.monotonic()
        await queue.enqueue(["m1"])
        await _until(lambda: bool(handler.jobs), timeout=3.0)
        assert handler.jobs == [["m1"]]
        assert handler.started[0] - enqueued >= 0.04
    finally:
        await queue.close()


async def test_a_full_chunk_goes_at_once_and_gathering_stops_at_a_chunk() -> None:
    handler = Recorder()
    queue = InProcessQueue(handler, workers=1, chunk_size=3, linger=0.2)
    await queue.start()
    try:
        enqueued = time.monotonic()
        await queue.enqueue(["a", "b", "c", "d"])  # a full chunk, then the rest
        await _until(lambda: bool(handler.jobs), timeout=3.0)
        assert handler.jobs == [["a", "b", "c"]]
        assert handler.started[0] - enqueued < 0.15  # a full chunk does not linger
        await _until(lambda: len(handler.jobs) == 2, timeout=3.0)
        assert handler.jobs == [["a", "b", "c"], ["d"]]
        # the one consumer took the rest after its first job, lingering for more
        assert handler.started[1] - handler.started[0] >= 0.2
    finally:
        await queue.close()
