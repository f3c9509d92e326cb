"""Per-provider rate limits (GCRA, a token bucket by reservation). Each caller reserves the
next free slot and sleeps until it: bursts wait, they do not fail. With Redis the schedule
is shared, so N workers together keep to the provider's limit."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from redis.asyncio import Redis

# KEYS[1] = schedule key; ARGV = interval_us, burst, max_wait_us. Returns the wait in
# microseconds, or -1 when the wait would exceed max_wait (nothing is reserved then).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new_tat = math.max(tat, now) + interval
local wait = new_tat - interval * burst - now
if wait > max_wait then return -1 end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
if wait < 0 then return 0 end
return wait
"""


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


class RedisRateLimiter:
    """The schedule in Redis, shared by every process using the same provider account."""

    def __init__(self, redis: Redis, *, prefix: str = "icc:ratelimit:", max_wait: float = 30.0):
        self._redis = redis
        self._prefix = prefix
        self._max_wait = max_wait
        self._script = redis.register_script(_GCRA)

    async def acquire(self, key: str, *, rate: float, burst: int) -> None:
        interval_us = max(1, round(1_000_000 / rate))
        wait_us = int(
            await self._script(
                keys=[self._prefix + key],
                args=[interval_us, burst, round(self._max_wait * 1_000_000)],
            )
        )
        if wait_us < 0:
            raise RateLimitExceeded(f"{key}: over {rate}/s for more than {self._max_wait:.0f} s")
        if wait_us > 0:
            await asyncio.sleep(wait_us / 1_000_000)
