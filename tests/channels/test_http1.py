"""channels.http1, the lean HTTP/1.1 pool, against raw asyncio servers that answer with the
framings a provider's gateway may use: chunked, gzip, close-delimited, Connection: close,
dropped connections and garbage."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from channels.http1 import (
    ConnectionPool,
    HttpProtocolError,
    Origin,
    parse_target,
    request_head,
)

Answerer = Callable[[bytes], Awaitable[bytes | None]]  # request bytes -> raw answer (None: drop)


class RawServer:
    """Reads one request at a time (head + Content-Length body) and writes what ``answer``
    gives, verbatim (closing after a ``connection: close`` answer); counts connections."""

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                raw = await self.answer(request)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
                if b"connection: close" in raw.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def origin(self) -> Origin:
        assert self.server is not None
        return Origin("http", "127.0.0.1", self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answerer], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(answer: Answerer) -> RawServer:
        raw = RawServer(answer)
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.server.close()


def _pool(limit: int = 4, timeout: float = 2.0) -> ConnectionPool:
    return ConnectionPool(limit=limit, timeout=timeout, keepalive=5.0)


def _get(origin: Origin, path: str = "/") -> bytes:
    return request_head("GET", path, [("host", f"{origin.host}:{origin.port}")], None)


def _fixed(body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_urls_split_into_origin_and_target() -> None:
    target = parse_target("https://sms.bank.local/send?a=%20b#frag")
    assert target == (Origin("https", "sms.bank.local", 443), "/send?a=%20b")
    assert parse_target("http://[::1]:8080?x=1") == (Origin("http", "::1", 8080), "/?x=1")
    assert parse_target("HTTP://User@Host:81").origin == Origin("http", "host", 81)
    with pytest.raises(ValueError, match="absolute"):
        parse_target("ftp://h/x")


def test_a_request_head_has_its_length_once_and_no_injected_lines() -> None:
    head = request_head("POST", "/p", [("host", "h"), ("x-a", "1")], 3)
    assert head == b"POST /p HTTP/1.1\r\nhost: h\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n"
    given = request_head("POST", "/p", [("Content-Length", "3")], 3)
    assert given.count(b"ength") == 1
    assert request_head("GET", "/", [("x-sign", "示例银行")], None).endswith(
        "x-sign: 示例银行\r\n\r\n".encode()
    )
    with pytest.raises(ValueError, match="line break"):
        request_head("GET", "/", [("x-a", "1\r\nx-evil: 2")], None)


async def test_answers_are_read_in_every_framing(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    answers = iter(
        [
            _fixed(b'{"ok":1}'),
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"4\r\n\xe7\x9f\xad\xe4\r\n4\r\n\xbf\xa1OK\r\n0\r\n\r\n",
            _fixed(gzip.compress("已发送".encode()), "content-encoding: gzip"),
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
        ]
    )

    async def answer(_: bytes) -> bytes:
        return next(answers)

    server = await serve(answer)
    pool = _pool()
    got = [await pool.request(server.origin, _get(server.origin)) for _ in range(4)]
    pool.close()
    assert [a.status for a in got] == [200, 200, 200, 502]
    assert got[0].body == b'{"ok":1}'
    assert got[1].body.decode() == "短信OK"
    assert got[2].body.decode() == "已发送"
    assert got[3].headers["Content-Length"] == "0"  # case-insensitive
    assert server.connections == 1  # all four over one kept-alive connection


async def test_a_close_delimited_body_ends_with_the_connection(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    sent = 0

    async def answer(_: bytes) -> bytes | None:
        nonlocal sent
        sent += 1
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it" if sent == 1 else None

    server = await serve(answer)
    pool = _pool()

    async def once() -> bytes:
        return (await pool.request(server.origin, _get(server.origin))).body

    # no length, no chunks: the body is what came before the server closed
    assert await once() == b"all of it"
    assert pool.open_connections == 0  # not kept: the server said close
    pool.close()


async def test_a_connection_dropped_before_the_answer_raises_and_is_not_reused(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    calls = 0

    async def answer(_: bytes) -> bytes | None:
        nonlocal calls
        calls += 1
        return None if calls == 1 else _fixed(b"ok")

    server = await serve(answer)
    pool = _pool()
    with pytest.raises(ConnectionError):
        await pool.request(server.origin, _get(server.origin))
    assert (await pool.request(server.origin, _get(server.origin))).body == b"ok"
    assert (server.connections, len(server.requests)) == (2, 2)  # sent once each, no retry
    pool.close()


async def test_garbage_is_a_protocol_error(serve: Callable[..., Awaitable[RawServer]]) -> None:
    async def answer(_: bytes) -> bytes:
        return b"SMTP 220 hello\r\n\r\n"

    server = await serve(answer)
    pool = _pool()
    with pytest.raises(HttpProtocolError):
        await pool.request(server.origin, _get(server.origin))
    assert pool.open_connections == 0
    pool.close()


async def test_a_slow_answer_times_out_and_frees_its_slot(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    async def answer(_: bytes) -> bytes:
        await asyncio.sleep(1.0)
        return _fixed(b"late")

    server = await serve(answer)
    pool = _pool(limit=1, timeout=0.1)
    with pytest.raises(TimeoutError):
        await pool.request(server.origin, _get(server.origin))
    assert pool.open_connections == 0
    pool.close()


async def test_waiters_get_connections_in_order_and_across_origins(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    async def answer(_: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return _fixed(b"x")

    first, second = await serve(answer), await serve(answer)
    pool = _pool(limit=2)
    requests = [(o, _get(o)) for o in (first.origin, second.origin) for _ in range(6)]
    answers = await asyncio.gather(*(pool.request(o, data) for o, data in requests))
    assert [a.body for a in answers] == [b"x"] * 12
    assert pool.open_connections <= 2
    assert first.connections + second.connections <= 4
    pool.close()


async def test_a_pool_wait_times_out_without_losing_the_slot(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    async def answer(_: bytes) -> bytes:
        await asyncio.sleep(0.3)
        return _fixed(b"x")

    server = await serve(answer)
    pool = _pool(limit=1, timeout=0.5)
    slow = asyncio.create_task(pool.request(server.origin, _get(server.origin)))
    await asyncio.sleep(0.05)
    pool.timeout = 0.1  # the slow request keeps the read timeout it started with
    with pytest.raises(TimeoutError, match="no free connection"):
        await pool.request(server.origin, _get(server.origin))
    assert (await slow).body == b"x"
    pool.timeout = 1.0
    assert (await pool.request(server.origin, _get(server.origin))).body == b"x"
    assert server.connections == 1  # the slot came back, with its kept-alive connection
    pool.close()


def test_it_runs_on_uvloop_as_the_worker_does() -> None:
    """uvloop's transports are not asyncio.Transport subclasses."""

    async def main() -> bytes:
        async def answer(_: bytes) -> bytes:
            return _fixed("好".encode())

        raw = RawServer(answer)
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        pool = _pool()
        try:
            return (await pool.request(raw.origin, _get(raw.origin))).body
        finally:
            pool.close()
            raw.server.close()

    assert uvloop.run(main()).decode() == "好"


async def test_a_request_ending_after_close_does_not_keep_its_connection(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    async def answer(_: bytes) -> bytes:
        await asyncio.sleep(0.05)
        return _fixed(b"x")

    server = await serve(answer)
    pool = _pool()
    running = asyncio.create_task(pool.request(server.origin, _get(server.origin)))
    await asyncio.sleep(0.01)
    pool.close()
    assert (await running).body == b"x"
    assert pool.open_connections == 0  # closed, not parked idle
