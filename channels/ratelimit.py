"""Per-provider rate limits (GCRA, a token bucket by reservation). Each caller reserves the
next free slot and sleeps until it: bursts wait, they do not fail. With Redis the schedule
is shared, so N workers together keep to the provider's limit."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from redis.asyncio import Redis

# KEYS[1] = schedule key; ARGV = interval_us, burst, max_wait_us, wanted, then each caller's
# own max wait in microseconds (at most max_wait_us; missing: max_wait_us). Callers take the
# next free slot in turn, each only if its wait is within the caller's max wait (a caller
# refused takes none); slot i (from 0) is due interval_us * i later. Returns {granted, wait
# of the first slot in microseconds, then 1 or 0 per caller}. Nothing is reserved when
# granted is 0.
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
local granted = 0
local answer = {0, first_wait}
for i = 1, wanted do
  local cap = math.min(tonumber(ARGV[4 + i] or max_wait), max_wait)
  if first_wait + interval * granted <= cap then
    granted = granted + 1
    answer[2 + i] = 1
  else
    answer[2 + i] = 0
  end
end
answer[1] = granted
if granted < 1 then return answer end
local new_tat = base + interval * granted
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return answer
"""

MAX_BATCH = 512  # slots reserved by one call at most


class RateLimitExceeded(Exception):
    """The wait for a slot would be longer than allowed: try again later."""


class RateLimiter(Protocol):
    async def acquire(
        self, key: str, *, rate: float, burst: int, max_wait: float | None = None
    ) -> None:
        """Wait for the next slot of ``key``; RateLimitExceeded (reserving nothing) when it
        is further away than the limiter's longest wait or the caller's ``max_wait``."""
        ...


class LocalRateLimiter:
    """The schedule in this process (embedded default)."""

    def __init__(self, *, max_wait: float = 30.0) -> None:
        self._tat: dict[str, float] = {}
        self._max_wait = max_wait

    async def acquire(
        self, key: str, *, rate: float, burst: int, max_wait: float | None = None
    ) -> None:
        interval = 1.0 / rate
        now = time.monotonic()
        new_tat = max(self._tat.get(key, 0.0), now) + interval
        wait = new_tat - interval * burst - now
        longest = _longest(self._max_wait, max_wait)
        if wait > longest:
            raise _exceeded(key, rate, longest)
        self._tat[key] = new_tat
        if wait > 0:
            await asyncio.sleep(wait)


def _longest(limiter_wait: float, caller_wait: float | None) -> float:
    return limiter_wait if caller_wait is None else max(0.0, min(limiter_wait, caller_wait))


def _exceeded(key: str, rate: float, longest: float) -> RateLimitExceeded:
    return RateLimitExceeded(f"{key}: over {rate}/s for more than {longest:.1f} s")


class _Waiter(NamedTuple):
    future: asyncio.Future[float]
    max_wait_us: int


@dataclass
class _Queue:
    """Callers of one key (and rate) waiting for a reservation; the task making it."""

    loop: asyncio.AbstractEventLoop
    waiters: list[_Waiter] = field(default_factory=list)
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

    async def acquire(
        self, key: str, *, rate: float, burst: int, max_wait: float | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queues.get((key, rate, burst))
        if queue is None or queue.loop is not loop:
            queue = self._queues[key, rate, burst] = _Queue(loop)
        waiter: asyncio.Future[float] = loop.create_future()
        longest = _longest(self._max_wait, max_wait)
        queue.waiters.append(_Waiter(waiter, round(longest * 1_000_000)))
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
                batch = [w for w in queue.waiters[: self._max_batch] if not w.future.done()]
                del queue.waiters[: self._max_batch]
                if batch:
                    await self._reserve_batch(batch, key, rate, burst)
        finally:
            queue.task = None

    async def _reserve_batch(self, batch: list[_Waiter], key: str, rate: float, burst: int) -> None:
        interval_us = max(1, round(1_000_000 / rate))
        caps = [waiter.max_wait_us for waiter in batch]
        try:
            answer = await self._script(
                keys=[self._prefix + key],
                args=[interval_us, burst, round(self._max_wait * 1_000_000), len(batch), *caps],
            )
        except asyncio.CancelledError:
            for waiter in batch:
                waiter.future.cancel()
            raise
        except Exception as exc:  # e.g. Redis unreachable: every caller hears of it
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            return
        # Slots are reckoned from the answer's arrival: never before Redis's own time.
        now = asyncio.get_running_loop().time()
        first_wait_us, slot = int(answer[1]), 0
        for waiter, granted in zip(batch, answer[2:], strict=True):
            if int(granted):
                due = now + max(0, first_wait_us + slot * interval_us) / 1_000_000
                slot += 1
                if not waiter.future.done():  # else the caller gave up: its slot stays unused
                    waiter.future.set_result(due)
            elif not waiter.future.done():
                waiter.future.set_exception(_exceeded(key, rate, waiter.max_wait_us / 1e6))
