from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

JobHandler = Callable[[list[str]], Awaitable[None]]


class MessageQueue(Protocol):
    async def start(self) -> None: ...

    async def enqueue(self, ids: Sequence[str], *, delay: float = 0.0) -> None:
        """Queue message ids for processing, in chunks, optionally after ``delay`` seconds."""

    async def ping(self) -> bool: ...

    async def backlog(self) -> int:
        """Jobs waiting to be taken (not counting delayed ones where the backend can tell)."""

    async def waiting_since(self) -> datetime | None:
        """When the oldest job still waiting to be taken (due now, not running) was enqueued;
        None when none is. Jobs are taken oldest first, so a message enqueued well before
        this whose job never claimed it had that job taken and lost (the sweeper's test)."""

    async def close(self) -> None: ...


def chunked(ids: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])
