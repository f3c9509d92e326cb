"""The embedded queue: asyncio consumer tasks inside ``icc serve``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from app.queue.base import JobHandler, chunked

log = logging.getLogger("icc.queue")

# How long a consumer that took a small job waits for more before sending. Each accepted
# group (a dozen requests under load) enqueues its own job; sent one by one, those jobs
# make as many small claim and outcome transactions, written by the same single SQLite
# writer as the accepts. Gathered for 2 ms, they merge: `icc serve` under bench.accept_single's
# load accepted 2-35% more per second in A/B runs, its senders keeping up (outbox empty).
LINGER_SECONDS = 0.002
# While a job is being sent, the next waits, gathering what arrives meanwhile into one job
# (fewer, larger claims and outcome groups for the single writer), unless the oldest job
# waiting has waited this long: then another consumer takes it, so that a slow send (a
# provider's timeout) holds the others up for no more than that.
# `icc serve` under bench.accept_single's load accepted 23% more per second with it (medians
# of three A/B runs), and 36-48% more with each gathered job sent as one slice as well
# (Runtime._process_gathered, sandbox providers).
PATIENCE_SECONDS = 0.05


class Job(NamedTuple):
    at: float  # when it was enqueued: time.time(), for the sweeper
    since: float  # and time.monotonic(), for waiting (a clock set back cannot stretch it)
    ids: list[str]


class _Jobs(asyncio.Queue[Job]):
    """A FIFO queue whose oldest job can be looked at."""

    _queue: deque[Job]  # asyncio.Queue's storage, oldest first

    def oldest(self) -> Job | None:
        return self._queue[0] if self._queue else None


class InProcessQueue:
    def __init__(
        self,
        handler: JobHandler,
        *,
        workers: int,
        chunk_size: int,
        linger: float = LINGER_SECONDS,
        patience: float = PATIENCE_SECONDS,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._chunk_size = chunk_size
        self._linger = linger
        self._patience = patience
        self._queue = _Jobs()
        self._sending = 0  # jobs taken and not yet sent
        self._changed = asyncio.Event()  # a job came or one was sent
        # One consumer gathers at a time: while it lingers, new jobs wait for it instead of
        # going each to another idle consumer.
        self._gathering = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume()) for _ in range(self._workers)]

    async def enqueue(self, ids: Sequence[str], *, delay: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        for chunk in chunked(ids, self._chunk_size):
            if delay > 0:
                # Lost if the process stops first: the outbox row brings it back.
                loop.call_later(delay, self._put, chunk)
            else:
                self._put(chunk)

    def _put(self, ids: list[str]) -> None:
        self._queue.put_nowait(Job(time.time(), time.monotonic(), ids))
        self._changed.set()

    async def _consume(self) -> None:
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # a cancel that something below swallowed (close() would wait forever)
                raise asyncio.CancelledError
            async with self._gathering:
                await self._turn()
                chunk, taken = await self._gather()
                self._sending += 1
            try:
                await self._handler(chunk)
            except Exception:
                # The outbox keeps the messages; the sweeper will hand them out again.
                log.exception("job failed", extra={"message_ids": len(chunk)})
            finally:
                self._sending -= 1
                self._changed.set()
                for _ in range(taken):
                    self._queue.task_done()

    async def _turn(self) -> None:
        """Wait while a job is being sent, until it is, or until the oldest job waiting has
        waited ``patience`` (PATIENCE_SECONDS)."""
        while self._sending:
            oldest = self._queue.oldest()
            left = None if oldest is None else oldest.since + self._patience - time.monotonic()
            if left is not None and left <= 0:
                return
            self._changed.clear()
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows the task's
            # cancellation when the event is set in the same loop turn as close() cancels
            # (a job arriving or ending then), and the consumer waited on forever
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                return

    async def _gather(self) -> tuple[list[str], int]:
        """A job, merged with the jobs waiting or arriving within the linger, up to a chunk
        (under load, small jobs, one per accepted group, make bigger claims and sends);
        and how many jobs it took."""
        chunk = (await self._queue.get()).ids
        taken = 1
        if len(chunk) < self._chunk_size and self._queue.empty() and self._linger > 0:
            await asyncio.sleep(self._linger)
        while len(chunk) < self._chunk_size and not self._queue.empty():
            chunk = chunk + self._queue.get_nowait().ids
            taken += 1
        return chunk, taken

    async def ping(self) -> bool:
        return True

    async def backlog(self) -> int:
        return self._queue.qsize()

    async def waiting_since(self) -> datetime | None:
        oldest = self._queue.oldest()
        return None if oldest is None else datetime.fromtimestamp(oldest.at, UTC)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
