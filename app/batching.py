"""Group commit: concurrent callers' items are written together, one transaction per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


# Loop turns a batch waits before it is taken. Whoever is about to submit gets its turn: on
# a busy server, the requests that came in while the last flush ran (SQLite's writer runs
# on the loop), and the next ones of the callers just answered. Under single sends from
# 32 connections, groups grew from about 16 to 32 messages, and icc serve's CPU per
# message fell by a tenth (bench.accept_single); a lone caller waits some microseconds.
LINGER_TURNS = 3


class Coalescer(Generic[T, R]):
    """Runs ``flush(items)`` for items submitted concurrently. One flush runs at a time;
    whatever arrives meanwhile, or within a few loop turns of the batch being taken
    (LINGER_TURNS), forms the next batch, so batches grow with load and a lone caller
    waits for nothing but those turns. ``flush`` returns one result per item, in order.

    With ``concurrency`` > 1, another flush starts beside the running ones once a full
    batch is waiting: a backlog is written by overlapping transactions instead of queueing
    behind one (their items must not conflict: different rows)."""

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 500,
        concurrency: int = 1,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._runners: set[asyncio.Task[None]] = set()

    @property
    def backlog(self) -> int:
        """Items waiting for a flush."""
        return len(self._pending)

    async def submit(self, item: T) -> R:
        return await self.submit_nowait(item)

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Submit without waiting: the future of the item's result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        runners = sum(1 for runner in self._runners if not runner.done())
        if not runners or (runners < self._concurrency and len(self._pending) >= self._max_batch):
            runner = asyncio.create_task(self._run())
            self._runners.add(runner)
            runner.add_done_callback(self._ended)
        return future

    def _ended(self, runner: asyncio.Task[None]) -> None:
        self._runners.discard(runner)
        if runner.cancelled() and not any(not r.done() for r in self._runners):
            # cancelled before it took them (lingering, or before it started): no flush
            # will come for what waits
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()

    async def _run(self) -> None:
        while self._pending:
            for _ in range(LINGER_TURNS):
                if len(self._pending) >= self._max_batch:
                    break
                await asyncio.sleep(0)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._flush([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._runners:
            await asyncio.wait(self._runners, timeout=10)
