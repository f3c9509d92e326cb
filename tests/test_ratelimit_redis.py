"""The Redis rate limit holds across processes: two processes share one provider's rate."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from channels.ratelimit import RateLimitExceeded, RedisRateLimiter
from tests import services

RATE, BURST, PER_PROCESS = 20, 2, 30

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from redis.asyncio import Redis
    from channels.ratelimit import RedisRateLimiter

    async def main(url, key, n):
        redis = Redis.from_url(url)
        limiter = RedisRateLimiter(redis)
        async def one():
            await limiter.acquire(key, rate=int(sys.argv[4]), burst=int(sys.argv[5]))
            print(time.time(), flush=True)
        await asyncio.gather(*(one() for _ in range(n)))
        await redis.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.fixture
def redis_url() -> str:
    problem = services.redis_available()
    if problem is not None:
        services.unavailable("Redis", problem)
    return services.REDIS_URL


def test_two_processes_together_keep_to_the_rate(redis_url: str) -> None:
    key = f"test-{uuid.uuid4().hex[:8]}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, key, str(PER_PROCESS), str(RATE), str(BURST)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    stamps: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        stamps += [float(line) for line in out.split()]
    stamps.sort()
    assert len(stamps) == 2 * PER_PROCESS
    # 60 sends at 20/s with a burst of 2 take at least (60 - 2) / 20 s
    assert stamps[-1] - stamps[0] >= (2 * PER_PROCESS - BURST) / RATE - 0.05
    for i, start in enumerate(stamps):  # no one-second window holds more than rate + burst
        in_window = sum(1 for t in stamps[i:] if t < start + 1.0)
        assert in_window <= RATE + BURST, (start, in_window)


# -- one process: reservations are batched, the schedule is not changed ----------------------


class CountingScript:
    """Wraps the limiter's script: counts the calls and the slots asked for."""

    def __init__(self, limiter: Any) -> None:
        self.inner = limiter._script
        self.calls: list[int] = []
        limiter._script = self

    async def __call__(self, *, keys: list[str], args: list[int]) -> Any:
        self.calls.append(args[3])
        return await self.inner(keys=keys, args=args)


@pytest.fixture
async def limiter(redis_url: str) -> AsyncIterator[tuple[RedisRateLimiter, str]]:
    redis = Redis.from_url(redis_url)
    key = f"test-{uuid.uuid4().hex[:8]}"
    try:
        yield RedisRateLimiter(redis, max_wait=5), key
    finally:
        await redis.delete(f"icc:ratelimit:{key}")
        await redis.aclose()


async def test_concurrent_callers_share_a_few_reservations_and_keep_the_schedule(
    limiter: tuple[RedisRateLimiter, str],
) -> None:
    rate_limiter, key = limiter
    script = CountingScript(rate_limiter)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stamps: list[float] = []

    async def one() -> None:
        await rate_limiter.acquire(key, rate=50, burst=5)
        stamps.append(loop.time() - started)

    await asyncio.gather(*(one() for _ in range(40)))
    assert sum(script.calls) == 40
    assert len(script.calls) <= 3, script.calls  # not one round trip per caller
    stamps.sort()
    assert stamps[4] < 0.1  # the burst goes at once
    for index, stamp in enumerate(stamps):  # then one every 20 ms, none early
        assert stamp >= (index + 1 - 5) / 50 - 0.002, (index, stamp)
    assert stamps[-1] < (40 - 5) / 50 + 0.3  # nor much late


async def test_without_an_effective_limit_a_caller_does_not_wait(
    limiter: tuple[RedisRateLimiter, str],
) -> None:
    rate_limiter, key = limiter
    script = CountingScript(rate_limiter)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(
        *(rate_limiter.acquire(key, rate=10_000_000, burst=10_000_000) for _ in range(1000))
    )
    assert loop.time() - started < 1.0
    assert sum(script.calls) == 1000
    assert len(script.calls) <= 3, script.calls


async def test_callers_past_the_longest_wait_are_refused_and_reserve_nothing(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url)
    key = f"test-{uuid.uuid4().hex[:8]}"
    strict = RedisRateLimiter(redis, max_wait=0.25)
    try:
        results = await asyncio.gather(
            *(strict.acquire(key, rate=10, burst=1) for _ in range(6)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, RateLimitExceeded)]
        # slots at 0, 0.1 and 0.2 s are within 0.25 s; the other three would wait longer
        assert (len(results) - len(refused), len(refused)) == (3, 3)
        # nothing was reserved for them: after the three, the next slot is at 0.3 s
        loop = asyncio.get_running_loop()
        started = loop.time()
        await strict.acquire(key, rate=10, burst=1)
        assert loop.time() - started < 0.25
    finally:
        await redis.delete(f"icc:ratelimit:{key}")
        await redis.aclose()


async def test_an_unreachable_redis_fails_every_waiting_caller(unused_tcp_port: int) -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{unused_tcp_port}/0", socket_connect_timeout=1)
    unreachable = RedisRateLimiter(redis)
    try:
        for _ in range(2):  # and the next callers hear of it too, nobody hangs
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(unreachable.acquire("k", rate=5, burst=1) for _ in range(5)),
                    return_exceptions=True,
                ),
                timeout=10,
            )
            assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await redis.aclose()


async def test_a_caller_that_gives_up_does_not_stall_the_others(
    limiter: tuple[RedisRateLimiter, str],
) -> None:
    rate_limiter, key = limiter
    quitter = asyncio.ensure_future(rate_limiter.acquire(key, rate=20, burst=1))
    others = [asyncio.ensure_future(rate_limiter.acquire(key, rate=20, burst=1)) for _ in range(3)]
    await asyncio.sleep(0)  # all four wait for the reservation in flight
    quitter.cancel()
    await asyncio.wait_for(asyncio.gather(*others), timeout=5)
    assert quitter.cancelled()


async def test_each_caller_s_max_wait_caps_its_own_wait(
    limiter: tuple[RedisRateLimiter, str],
) -> None:
    """Callers with their own max_wait (the time left before their send's deadline) share a
    reservation: one whose slot would come too late is refused and takes no slot."""
    rate_limiter, key = limiter
    script = CountingScript(rate_limiter)
    loop = asyncio.get_running_loop()
    started = loop.time()
    done: dict[str, float] = {}

    async def one(name: str, max_wait: float | None) -> None:
        await rate_limiter.acquire(key, rate=10, burst=1, max_wait=max_wait)
        done[name] = loop.time() - started

    results = await asyncio.gather(
        one("first", None),  # the burst: at once
        one("hurried", 0.05),  # the next slot is 0.1 s away: refused
        one("patient", 0.15),  # takes that slot
        one("last", None),  # 0.2 s
        return_exceptions=True,
    )
    assert isinstance(results[1], RateLimitExceeded)
    assert len(script.calls) == 1, script.calls  # one reservation for the four
    assert done["first"] < 0.05
    assert 0.09 < done["patient"] < 0.19
    assert 0.19 < done["last"] < 0.29
