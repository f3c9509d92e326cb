"""The Redis rate limit holds across processes: two processes share one provider's rate."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

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
