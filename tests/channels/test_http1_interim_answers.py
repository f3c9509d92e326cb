"""channels.http1 skips interim 1xx answers (``100 Continue``, which IIS and some Java
gateways send even unasked; ``103 Early Hints`` from a CDN in front of a gateway) and returns
the final answer (RFC 9110 §15.2: a client parses and ignores 1xx answers it did not ask for);
an answer arriving when no request waits closes its connection instead of being read as the
next request's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from channels.base import ProviderContext
from channels.errors import TransientChannelError
from channels.http1 import ConnectionPool, Origin, request_head
from channels.sms.http_gateway import HttpSmsProvider


class InterimServer:
    """Answers each request with ``100 Continue`` at once and the final answer later. The
    final answer is 503 for the first request, then 200 echoing the request's message id."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.requests += 1
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(self.delay)
                if self.requests == 1:
                    final = b'{"error":"busy"}'
                    status = b"503 Service Unavailable"
                else:
                    final = json.dumps({"id": json.loads(body or b"{}").get("message_id")}).encode()
                    status = b"200 OK"
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n" % len(final) + final
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def interim() -> AsyncIterator[InterimServer]:
    raw = InterimServer(delay=0.05)
    raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    yield raw
    raw.server.close()


async def test_the_pool_returns_the_final_answer_after_100_continue(
    interim: InterimServer,
) -> None:
    pool = ConnectionPool(limit=2, timeout=2.0, keepalive=5.0)
    origin = Origin("http", "127.0.0.1", interim.port)
    head = request_head("GET", "/", [("host", f"127.0.0.1:{interim.port}")], None)
    try:
        answer = await pool.request(origin, head)
    finally:
        pool.close()
    assert answer.status == 503  # the server's final answer
    assert answer.body == b'{"error":"busy"}'


async def test_a_gateway_refusal_behind_100_continue_is_a_refusal(
    interim: InterimServer,
) -> None:
    provider = HttpSmsProvider(
        account="gw",
        channel="sms",
        settings={
            "url": f"http://127.0.0.1:{interim.port}/send",
            "message_id_field": "id",
        },
        context=ProviderContext(),
    )
    try:
        # m1: the gateway is busy (503, transient: retry). m2: accepted, id "m2".
        with pytest.raises(TransientChannelError):
            await provider.send(
                to="13800138000",
                content={"body": "您的验证码123456"},
                idempotency_key="m1:sms",
                message_id="m1",
            )
        await asyncio.sleep(0.1)  # m1's late 503 arrives on the pooled connection
        second = await provider.send(
            to="13800138001",
            content={"body": "账户支出1,200.00元"},
            idempotency_key="m2:sms",
            message_id="m2",
        )
        assert second.provider_message_id == "m2"
    finally:
        await provider.close()


async def test_each_request_gets_its_own_final_answer_on_a_kept_alive_connection(
    interim: InterimServer,
) -> None:
    """The final answer of m2 comes well after its 100 Continue: it is m2's, and m3, sent
    next on the same connection, gets its own."""
    interim.requests = 1  # every final answer is a 200 echoing the message id
    interim.delay = 0.2
    pool = ConnectionPool(limit=1, timeout=2.0, keepalive=5.0)
    origin = Origin("http", "127.0.0.1", interim.port)

    def post(message_id: str) -> bytes:
        body = json.dumps({"message_id": message_id}).encode()
        headers = [("host", f"127.0.0.1:{interim.port}"), ("content-type", "application/json")]
        return request_head("POST", "/send", headers, len(body)) + body

    try:
        first = await pool.request(origin, post("m2"))
        second = await pool.request(origin, post("m3"))
    finally:
        pool.close()
    assert (second.status, json.loads(second.body or b"null")) == (200, {"id": "m3"})
    assert (first.status, json.loads(first.body or b"null")) == (200, {"id": "m2"})


async def _serve_once(answer: bytes) -> tuple[asyncio.Server, int, list[int]]:
    """Writes ``answer`` (verbatim) to every request; counts connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1]), connections


async def test_early_hints_in_the_same_packet_are_skipped_with_their_headers() -> None:
    answer = (
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    )
    server, port, connections = await _serve_once(answer)
    pool = ConnectionPool(limit=1, timeout=2.0, keepalive=5.0)
    head = request_head("GET", "/", [("host", f"127.0.0.1:{port}")], None)
    try:
        answers = [await pool.request(Origin("http", "127.0.0.1", port), head) for _ in "ab"]
    finally:
        pool.close()
        server.close()
    assert [(a.status, a.body, "link" in a.headers) for a in answers] == [(200, b"ok", False)] * 2
    assert len(connections) == 1  # kept alive across the interim answers


async def test_an_answer_to_no_request_closes_its_connection() -> None:
    """A server answering twice: the second answer is to no request, and the next request
    goes on a new connection instead of reading it."""
    once = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"
    extra = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\nstale"
    server, port, connections = await _serve_once(once + extra)
    pool = ConnectionPool(limit=1, timeout=2.0, keepalive=5.0)
    head = request_head("GET", "/", [("host", f"127.0.0.1:{port}")], None)
    try:
        first = await pool.request(Origin("http", "127.0.0.1", port), head)
        await asyncio.sleep(0.05)
        second = await pool.request(Origin("http", "127.0.0.1", port), head)
    finally:
        pool.close()
        server.close()
    assert (first.status, first.body) == (200, b"first")
    assert (second.status, second.body) == (200, b"first")
    assert len(connections) == 2


async def test_two_answers_in_one_read_leave_no_closed_connection_in_the_pool() -> None:
    """The second answer closes the connection; the first request's answer must not put it
    back as reusable, or the next request would be written to a closed socket and wait its
    whole timeout."""
    count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                count += 1
                ok = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n"
                writer.write(ok + b"A" + (ok + b"B" if count == 1 else b""))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(limit=1, timeout=2.0, keepalive=5.0)
    origin = Origin("http", "127.0.0.1", port)
    head = request_head("GET", "/", [("host", f"127.0.0.1:{port}")], None)
    try:
        first, second = await asyncio.gather(pool.request(origin, head), pool.request(origin, head))
    finally:
        pool.close()
        server.close()
    assert (first.status, first.body, second.status, second.body) == (200, b"A", 200, b"A")
