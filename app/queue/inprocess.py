"""The embedded queue: asyncio consumer tasks inside ``icc serve``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from app.queue.base import JobHandler, chunked

log = logging.getLogger("icc.queue")


class InProcessQueue:
    def __init__(self, handler: JobHandler, *, workers: int, chunk_size: int) -> None:
        self._handler = handler
        self._workers = workers
        self._chunk_size = chunk_size
        self._queue: asyncio.Queue[list[str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume()) for _ in range(self._workers)]

    async def enqueue(self, ids: Sequence[str], *, delay: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        for chunk in chunked(ids, self._chunk_size):
            if delay > 0:
                # Lost if the process stops first: the outbox row brings it back.
                loop.call_later(delay, self._queue.put_nowait, chunk)
            else:
                self._queue.put_nowait(chunk)

    async def _consume(self) -> None:
        while True:
            chunk = await self._queue.get()
            taken = 1
            # Take whatever else is waiting, up to a chunk: under load, small jobs (one per
            # accepted group) merge into bigger claims and sends.
            while len(chunk) < self._chunk_size and not self._queue.empty():
                chunk = chunk + self._queue.get_nowait()
                taken += 1
            try:
                await self._handler(chunk)
            except Exception:
                # The outbox keeps the messages; the sweeper will hand them out again.
                log.exception("job failed", extra={"message_ids": len(chunk)})
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    async def ping(self) -> bool:
        return True

    async def backlog(self) -> int:
        return self._queue.qsize()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
