"""What the simulated HTTP providers share: injected latency, random and forced error codes,
and delivery-report pushes back to the platform after a delay."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


class Faults:
    """Latency before every answer, random errors at ``error_rate`` (0..1), and forced
    codes: ``force(code, count)`` makes the next ``count`` requests answer ``code``."""

    def __init__(
        self, *, latency: float = 0.0, error_rate: float = 0.0, seed: int | None = None
    ) -> None:
        if latency < 0 or not 0 <= error_rate <= 1:
            raise ValueError("latency must be >= 0 and error_rate within 0..1")
        self.latency = latency
        self.error_rate = error_rate
        self._rng = random.Random(seed)
        self._forced: deque[str] = deque()

    def force(self, code: str, count: int = 1) -> None:
        self._forced.extend([code] * count)

    def pick(self, random_codes: Sequence[str]) -> str | None:
        """The error code this request answers with, if any (forced ones first)."""
        if self._forced:
            return self._forced.popleft()
        if self.error_rate and self._rng.random() < self.error_rate:
            return self._rng.choice(list(random_codes))
        return None

    def chance(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def digits(self, count: int) -> str:
        return "".join(self._rng.choice("0123456789") for _ in range(count))

    async def delay(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)


@dataclass(frozen=True)
class PushedCallback:
    url: str
    payload: Any
    status: int | None  # None when the platform could not be reached
    answer: bytes


class CallbackPusher:
    """POSTs JSON callbacks to ``url`` after ``delay`` seconds, in the background; what was
    pushed (and how the platform answered) is kept in ``pushed``."""

    def __init__(self, *, url: str | None = None, delay: float = 0.0) -> None:
        self.url = url
        self.delay = delay
        self.pushed: list[PushedCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def push(self, payload: Any, *, url: str | None = None) -> bool:
        """Schedule a push; False when no callback URL is configured."""
        target = url or self.url
        if target is None:
            return False
        task = asyncio.get_running_loop().create_task(self._push(target, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def wait(self) -> None:
        """Until every scheduled push has been made (for tests and demos)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _push(self, url: str, payload: Any) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self._session.post(
                url, data=orjson.dumps(payload), headers=headers
            ) as response:
                answer = await response.read()
                self.pushed.append(PushedCallback(url, payload, response.status, answer))
        except aiohttp.ClientError as exc:
            self.pushed.append(PushedCallback(url, payload, None, str(exc).encode()))
