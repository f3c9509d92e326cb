from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

JobHandler = Callable[[list[str]], Awaitable[None]]


class MessageQueue(Protocol):
    async def start(self) -> None: ...

    async def enqueue(self, ids: Sequence[str], *, delay: float = 0.0) -> None:
        """Queue message ids for processing, in chunks, optionally after ``delay`` seconds."""

    async def ping(self) -> bool: ...

    async def backlog(self) -> int:
        """Jobs waiting to be taken (not counting delayed ones where the backend can tell)."""

    async def close(self) -> None: ...


def chunked(ids: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])
