"""A lean HTTP/1.1 client: keep-alive connections on asyncio protocols, responses parsed by
httptools (llhttp, the parser Node.js uses; uvicorn's too).

Why not aiohttp's client on the dispatch hot path: per request it builds a ClientRequest,
a ClientResponse, a timer context, trace hooks, cookie handling and a stream reader, and
profiles of a worker sending SMS spent more CPU there than in everything else the worker
does per message. This client writes one buffer per request and resolves one future per
response: about a third of aiohttp's CPU per request on the same server
(bench/sms_throughput).

What it does: HTTP/1.1 with keep-alive, a limit on open connections shared by all origins
(waiters are served in order; a freed connection goes straight to the next waiter of its
origin), idle connections dropped after ``keepalive`` seconds, TLS through the given
context (certificates and host names verified), chunked and gzip/deflate bodies, interim
1xx answers skipped (the final answer follows them), and httpx's timeouts: ``timeout`` to
get a connection from the pool, to connect, and between reads of the answer. A request is
sent once: a connection that dies before its answer raises ``ConnectionError``, and the
caller decides whether to try again (a provider's idempotency key makes that safe). Data
arriving when no request waits for it closes the connection: read as the next request's
answer, it would give that request another's verdict. Proxies are not handled here
(channels.http sends proxied requests through aiohttp).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple, cast

import httptools
from multidict import CIMultiDict

_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpProtocolError(ConnectionError):
    """The server's answer was not HTTP/1.1 this client understands; the connection is
    dropped."""


class Origin(NamedTuple):
    scheme: str
    host: str  # as in the URL, without brackets for IPv6
    port: int


class Target(NamedTuple):
    origin: Origin
    path: str  # the request target as it goes on the wire: path and query, percent-encoded


def parse_target(url: str) -> Target:
    """``url`` (absolute, percent-encoded) split into its origin and request target."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    rest = rest.partition("#")[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    authority, path = rest[:end], rest[end:]
    if not path.startswith("/"):
        path = "/" + path
    host, port = _host_port(authority.rpartition("@")[2], _DEFAULT_PORTS[scheme])
    if not host:
        raise ValueError(f"no host in {url!r}")
    return Target(Origin(scheme, host, port), path)


def _host_port(authority: str, default: int) -> tuple[str, int]:
    if authority.startswith("["):  # an IPv6 literal
        host, _, after = authority[1:].partition("]")
        port = after.removeprefix(":")
    else:
        host, _, port = authority.partition(":")
    return host.lower(), int(port) if port else default


def request_head(
    method: str, path: str, headers: Iterable[tuple[str, str]], length: int | None
) -> bytes:
    """The request line and headers; ``length``: the body's Content-Length to add, unless
    the headers carry one. Names and values may not hold line breaks (header injection)."""
    lines = [f"{method} {path} HTTP/1.1"]
    has_length = False
    for name, value in headers:
        if "\n" in name or "\r" in name or "\n" in value or "\r" in value:
            raise ValueError(f"line break in the {name!r} header")
        has_length = has_length or name.lower() == "content-length"
        lines.append(f"{name}: {value}")
    if length is not None and not has_length:
        lines.append(f"content-length: {length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()  # UTF-8, as aiohttp sent non-ASCII header values


class Answer(NamedTuple):
    status: int
    headers: CIMultiDict[str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._until_eof = False  # a body without length or chunking ends with the connection
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._last_read = 0.0
        self.reusable = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Nothing was asked: an answer to no request (a late one, after its request gave
            # up) would be read as the next request's.
            self.close()
            return
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(f"malformed answer: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides the outcome

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._until_eof and exc is None:
            self._complete()  # the body ran to the end of the connection
        else:
            reason = f": {exc}" if exc else ""
            self._fail(ConnectionResetError(f"the server closed the connection{reason}"))

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # a second answer in the data of the first: to no request
        self._headers, self._body, self._headers_done = [], [], False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        names = {name.lower() for name, _ in self._headers}
        self._until_eof = "content-length" not in names and "transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if _is_interim(self._parser.get_status_code()):
            # 100 Continue, 103 Early Hints (sent unasked by some gateways and CDNs): the
            # final answer follows on the connection, and the parser reads it next.
            self._headers, self._body, self._headers_done = [], [], False
            return
        # not a connection closed meanwhile (a second answer in the same read closes it)
        closing = self._transport is None or self._transport.is_closing()
        self.reusable = self._parser.should_keep_alive() and not closing
        self._complete()

    # -- requests -----------------------------------------------------------------------
    async def exchange(self, data: bytes, read_timeout: float) -> Answer:
        assert self._transport is not None
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._waiter = waiter
        self.reusable = False
        self._read_timeout = read_timeout
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + read_timeout, self._check_read)
        self._transport.write(data)
        try:
            return await waiter
        finally:
            self._timer.cancel()
            self._waiter = None

    def _check_read(self) -> None:
        """A timeout between reads (httpx's read timeout), re-armed while data arrives."""
        deadline = self._last_read + self._read_timeout
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_read)
        else:
            self._fail(TimeoutError(f"no answer within {self._read_timeout:g}s"))

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        headers = CIMultiDict(self._headers)
        try:
            body = _decoded(b"".join(self._body), headers.get("content-encoding", ""))
        except zlib.error as exc:
            self._fail(HttpProtocolError(f"undecodable body: {exc}"))
            return
        waiter.set_result(Answer(self._parser.get_status_code(), headers, body))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


def _is_interim(status: int) -> bool:
    """A 1xx answer other than 101 (which the parser reports as an upgrade)."""
    return 100 <= status < 200 and status != 101


def _decoded(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompress(body, wbits=47)  # 47: zlib or gzip header, detected
    raise zlib.error(f"unsupported content-encoding {encoding!r}")


class _Waiter(NamedTuple):
    origin: Origin
    future: asyncio.Future[_Connection | None]  # a connection of the origin, or a free slot


class ConnectionPool:
    """Keep-alive connections, at most ``limit`` open, shared by the origins asked for."""

    def __init__(
        self,
        *,
        limit: int,
        timeout: float,
        keepalive: float,
        tls: Callable[[], ssl.SSLContext] = ssl.create_default_context,
    ) -> None:
        self.limit = limit
        self.timeout = timeout
        self.keepalive = keepalive
        self._tls = tls  # called on the first https connection (loading CAs takes a while)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0  # connections open or being opened (slots taken)
        self._waiters: deque[_Waiter] = deque()
        self._closed = False  # requests still running end their connections

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(self, origin: Origin, data: bytes) -> Answer:
        """Send ``data`` (a whole request) on a connection to ``origin``; its answer."""
        connection = await self._acquire(origin)
        try:
            answer = await connection.exchange(data, self.timeout)
        except BaseException:
            connection.close()  # a failed or cancelled exchange leaves it in an unknown state
            self._release(connection)
            raise
        self._release(connection)
        return answer

    async def _acquire(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        now = loop.time()
        while idle:
            connection = idle.pop()
            if connection.reusable and now - connection.idle_since < self.keepalive:
                return connection
            connection.close()
            self._open -= 1
        if self._open < self.limit:
            self._open += 1
        elif not self._close_idle_elsewhere():  # else: its slot is ours
            handed = await self._wait(origin, loop)
            if handed is not None:
                return handed
        return await self._connect(origin, loop)  # on a slot already counted in _open

    def _close_idle_elsewhere(self) -> bool:
        """Make room by closing an idle connection to another origin."""
        for connections in self._idle.values():
            if connections:
                connections.pop(0).close()
                return True
        return False

    async def _wait(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        future: asyncio.Future[_Connection | None] = loop.create_future()
        waiter = _Waiter(origin, future)
        self._waiters.append(waiter)
        timer = loop.call_later(self.timeout, _expire, future, self.timeout)
        try:
            return await future
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif future.done() and not future.cancelled() and future.exception() is None:
                self._pass_on(future.result())  # handed over as we gave up: pass it on
            raise
        finally:
            timer.cancel()

    async def _connect(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> _Connection:
        tls = self._tls() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self.timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin, loop),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
        except BaseException:
            self._pass_on(None)
            raise
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._pass_on(connection)
        else:
            connection.close()
            self._pass_on(None)

    def _pass_on(self, connection: _Connection | None) -> None:
        """A connection (or, with None, its slot) is free: to the first waiter, else idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            if connection is not None and waiter.origin != connection.origin:
                connection.close()  # the slot goes to a waiter of another origin
                connection = None
            waiter.future.set_result(connection)
            return
        if connection is None:
            self._open -= 1
        else:
            self._idle.setdefault(connection.origin, []).append(connection)

    def close(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._open -= sum(len(c) for c in self._idle.values())
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(RuntimeError("the HTTP client is closed"))


def _expire(future: asyncio.Future[_Connection | None], timeout: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no free connection within {timeout:g}s"))
