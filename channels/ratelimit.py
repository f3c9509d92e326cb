"""Per-provider rate limits (GCRA, a token bucket by reservation). Each caller reserves the
next free slot and sleeps until it: bursts wait, they do not fail. With Redis the schedule
is shared, so N workers together keep to the provider's limit."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis

# KEYS[1] = schedule key; ARGV = interval_us, burst, max_wait_us, wanted. Reserves up to
# `wanted` consecutive slots, those whose wait is within max_wait, and returns {granted,
# wait of the first in microseconds}; slot i (from 0) is due interval_us * i later. Nothing
# is reserved when granted is 0.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = math.max(tat, now)
local first_wait = base + interval - interval * burst - now
local granted = math.min(wanted, math.floor((max_wait - first_wait) / interval) + 1)
if granted < 1 then return {0, first_wait} end
local new_tat = base + interval * granted
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {granted, first_wait}
"""

MAX_BATCH = 512  # slots reserved by one call at most


class RateLimitExceeded(Exception):
    """The wait for a slot would be longer than allowed: try again later."""


class RateLimiter(Protocol):
    async def acquire(self, key: str, *, rate: float, burst: int) -> None: ...


class LocalRateLimiter:
    """The schedule in this process (embedded default)."""

    def __init__(self, *, max_wait: float = 30.0) -> None:
        self._tat: dict[str, float] = {}
        self._max_wait = max_wait

    async def acquire(self, key: str, *, rate: float, burst: int) -> None:
        interval = 1.0 / rate
        now = time.monotonic()
        new_tat = max(self._tat.get(key, 0.0), now) + interval
        wait = new_tat - interval * burst - now
        if wait > self._max_wait:
            raise RateLimitExceeded(f"{key}: over {rate}/s for more than {self._max_wait:.0f} s")
        self._tat[key] = new_tat
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class _Queue:
    """Callers of one key (and rate) waiting for a reservation; the task making it."""

    loop: asyncio.AbstractEventLoop
    waiters: list[asyncio.Future[float]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class RedisRateLimiter:
    """The schedule in Redis, shared by every process using the same provider account.

    One script call per round trip, not per message: callers of a key that arrive while a
    reservation is in flight wait for the next one, which reserves a slot for each of them
    at once (consecutive slots, exactly as many separate calls would have reserved). Each
    caller then sleeps until its own slot, so the schedule is the same as one call per
    message; nothing is reserved ahead of a caller, so no slot is held back to be used
    late in a bunch."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "icc:ratelimit:",
        max_wait: float = 30.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max_wait = max_wait
        self._max_batch = max_batch
        self._script = redis.register_script(_GCRA)
        self._queues: dict[tuple[str, float, int], _Queue] = {}

    async def acquire(self, key: str, *, rate: float, burst: int) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queues.get((key, rate, burst))
        if queue is None or queue.loop is not loop:
            queue = self._queues[key, rate, burst] = _Queue(loop)
        waiter: asyncio.Future[float] = loop.create_future()
        queue.waiters.append(waiter)
        if queue.task is None:
            queue.task = loop.create_task(self._reserve(queue, key, rate, burst))
        due = await waiter
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _reserve(self, queue: _Queue, key: str, rate: float, burst: int) -> None:
        """Reserve slots for the waiting callers, a batch per call, until none is left."""
        try:
            while queue.waiters:
                batch = [w for w in queue.waiters[: self._max_batch] if not w.done()]
                del queue.waiters[: self._max_batch]
                if batch:
                    await self._reserve_batch(batch, key, rate, burst)
        finally:
            queue.task = None

    async def _reserve_batch(
        self, batch: list[asyncio.Future[float]], key: str, rate: float, burst: int
    ) -> None:
        interval_us = max(1, round(1_000_000 / rate))
        try:
            granted, first_wait_us = await self._script(
                keys=[self._prefix + key],
                args=[interval_us, burst, round(self._max_wait * 1_000_000), len(batch)],
            )
        except asyncio.CancelledError:
            for waiter in batch:
                waiter.cancel()
            raise
        except Exception as exc:  # e.g. Redis unreachable: every caller hears of it
            for waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        # Slots are reckoned from the answer's arrival: never before Redis's own time.
        now = asyncio.get_running_loop().time()
        for index, waiter in enumerate(batch):
            if waiter.done():  # the caller gave up (its slot stays unused)
                continue
            if index < int(granted):
                wait_us = int(first_wait_us) + index * interval_us
                waiter.set_result(now + max(0, wait_us) / 1_000_000)
            else:
                waiter.set_exception(
                    RateLimitExceeded(f"{key}: over {rate}/s for more than {self._max_wait:.0f} s")
                )
