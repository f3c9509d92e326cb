"""A minimal HTTP/1.1 keep-alive client on asyncio streams, and two load shapes built on it.

httpx tops out at a few hundred requests/s here (encode/httpx#3215), so it would measure
itself; this client only writes prebuilt requests and reads Content-Length bodies.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bench._support import HOST


def post_request(path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The bytes of one POST with a JSON body."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {HOST}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            return int(value)
        if name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported by this client")
    return 0


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a prebuilt request; return (status, body)."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        body = await self._reader.readexactly(_content_length(head))
        return status, body

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


@dataclass
class ClosedLoopResult:
    elapsed: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


async def closed_loop(
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int,
    duration: float,
    max_requests: int,
) -> ClosedLoopResult:
    """Each connection sends its next request as soon as the previous one is answered, until
    ``duration`` seconds or ``max_requests`` requests, whichever comes first."""
    result = ClosedLoopResult()
    issued = 0
    started = time.perf_counter()
    deadline = started + duration

    async def worker(conn: Connection) -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            request = requests[issued % len(requests)]
            issued += 1
            sent = time.perf_counter()
            try:
                status, _ = await conn.send(request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                return
            result.latencies.append(time.perf_counter() - sent)
            result.statuses[status] += 1

    conns = await asyncio.gather(*(Connection.open(port) for _ in range(connections)))
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    result.elapsed = time.perf_counter() - started
    return result


async def open_loop(
    fire: Callable[[int], Awaitable[None]], *, rate: float, count: int, max_in_flight: int
) -> float:
    """Start ``fire(i)`` for i in 0..count-1 at a fixed ``rate`` per second, whether or not the
    earlier ones have finished (at most ``max_in_flight`` at once); wait for all of them.
    Returns the rate at which they were actually started."""
    slots = asyncio.Semaphore(max_in_flight)
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(index: int) -> None:
        try:
            await fire(index)
        finally:
            slots.release()

    for index in range(count):
        delay = started + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(one(index)))
    launched = loop.time() - started
    await asyncio.gather(*tasks)
    return (count - 1) / launched if count > 1 and launched > 0 else rate
