"""The HTTP clients of the channel adapters.

``HttpClient`` (the SMS adapters, the dispatch hot path) sends through channels.http1, a
lean HTTP/1.1 keep-alive pool: profiles of a worker sending through httpx, even over the
httpx-aiohttp transport, spent a third of its CPU in the httpx layers (request and response
models, header and URL normalisation, the transport's conversions) on top of aiohttp's own
work, and httpx's own pool is several times slower still (encode/httpx#3215); aiohttp's
client alone still cost the worker more than the rest of a send (see channels.http1).
The request and response types keep the shape of httpx's (``method``, ``url``,
``headers``, ``content``; ``status_code``, ``content``, ``json()``), and it keeps what the
httpx client gave the adapters: per-phase timeouts (pool, connect, read), a connection
limit with keep-alive, TLS verified against certifi (or ``SSL_CERT_FILE`` /
``SSL_CERT_DIR``), proxies from the environment. A request is sent as built: its URL is
not re-quoted and its ``host`` header is the one a signature covered.

``make_http_client`` (WeChat: token refreshes and template sends, off the hot path) keeps
httpx's full API over the aiohttp transport.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol
from urllib.request import getproxies

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from yarl import URL

from channels.http1 import ConnectionPool, Target, parse_target, request_head

log = logging.getLogger("icc.channels.http")

KEEPALIVE_SECONDS = 5.0  # httpx's keep-alive expiry
_URL_CACHE_SIZE = 64


def make_http_client(
    *, timeout: float = 10.0, max_connections: int = 100, base_url: str = ""
) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits),
        timeout=httpx.Timeout(timeout),
        base_url=base_url,
    )


class OutgoingRequest(Protocol):
    """What ``HttpClient.send`` sends: an ``HttpRequest``, or anything of its shape (an
    ``httpx.Request`` too). ``url`` is absolute and percent-encoded; ``str(url)`` is sent."""

    @property
    def method(self) -> str: ...
    @property
    def url(self) -> Any: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...


@dataclass(slots=True)
class HttpRequest:
    """One request, as it goes on the wire. ``headers`` use lower-case names (those the
    adapters set) and always hold ``host``: what a signature covers is what is sent."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes = b""


@dataclass(slots=True)  # not frozen: frozen dataclasses are slower to make, one per send
class HttpResponse:
    status_code: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return orjson.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def build_request(
    method: str, url: str, *, headers: Mapping[str, str] | None = None, content: bytes = b""
) -> HttpRequest:
    """A request for ``url`` (absolute, percent-encoded) with its ``host`` header set."""
    return HttpRequest(method, url, {"host": host_header(url), **(headers or {})}, content)


def encoded_url(url: str) -> str:
    """``url`` percent-encoded where it needs to be (done once per configured endpoint:
    requests are sent without re-quoting)."""
    return str(URL(url))


def host_header(url: str) -> str:
    """The Host header of a request to ``url``: host, and port when not the default."""
    return _host_of_origin(_origin(url))


def _origin(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not an absolute URL: {url!r}")
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    return f"{scheme}://{rest[:end]}"


@lru_cache(maxsize=256)
def _host_of_origin(origin: str) -> str:
    host = URL(origin).host_port_subcomponent
    if not host:
        raise ValueError(f"no host in {origin!r}")
    return host


def raw_path(url: str) -> str:
    """The percent-encoded path of ``url`` (without the query), as it goes on the wire."""
    return URL(url, encoded=True).raw_path


def redact(url: str) -> str:
    """The URL without its query string (phone numbers, template parameters, tokens)."""
    base, sep, _ = url.partition("?")
    return f"{base}?<redacted>" if sep else base


def ssl_context() -> ssl.SSLContext:
    """Verified TLS as httpx sets it up: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set,
    else certifi's CA bundle. One context per process (loading the bundle takes tens of
    milliseconds), shared by the accounts' pools."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@lru_cache(maxsize=4)
def _ssl_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if capath:
        return ssl.create_default_context(capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _env_proxy(origin: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``origin`` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY),
    looked up once per origin: aiohttp's ``trust_env`` would read the environment per
    request."""
    from aiohttp.helpers import get_env_proxy_for_url

    try:
        return get_env_proxy_for_url(URL(origin))
    except LookupError:
        return None, None


class HttpClient:
    """One connection pool for one provider account; see the module docstring.

    Requests go through channels.http1's lean HTTP/1.1 pool; those the environment routes
    through a proxy go through an ``aiohttp.ClientSession`` (made on first need). Transport
    failures raise ``TimeoutError`` for timeouts, ``OSError`` (``ConnectionError``,
    ``ssl.SSLError``...) or ``aiohttp.ClientError`` otherwise."""

    def __init__(self, *, timeout: float = 10.0, max_connections: int = 100) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._targets: dict[str, Target] = {}
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}
        self._env_has_proxies = bool(getproxies())

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _connections(self) -> ConnectionPool:
        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        if self._pool is None:
            self._pool = ConnectionPool(
                limit=self.max_connections,
                timeout=self.timeout,
                keepalive=KEEPALIVE_SECONDS,
                tls=ssl_context,
            )
        return self._pool

    def _target(self, url: str) -> Target:
        """Fixed endpoints (no query string) are parsed once."""
        cached = self._targets.get(url)
        if cached is not None:
            return cached
        target = parse_target(url)
        if "?" not in url:
            if len(self._targets) >= _URL_CACHE_SIZE:
                self._targets.clear()
            self._targets[url] = target
        return target

    def _proxy(self, url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        if not self._env_has_proxies:
            return None, None
        origin = _origin(url)
        found = self._proxies.get(origin)
        if found is None:
            found = self._proxies[origin] = _env_proxy(origin)
        return found

    async def send(self, request: OutgoingRequest) -> HttpResponse:
        pool = self._connections()
        url = request.url if isinstance(request.url, str) else str(request.url)
        proxy, proxy_auth = self._proxy(url)
        if proxy is not None or request.method == "HEAD":  # HEAD: an answer without its body
            response = await self._send_by_aiohttp(request, url, proxy, proxy_auth)
        else:
            target = self._target(url)
            content = request.content
            length = len(content) if content or request.method not in _BODILESS else None
            head = request_head(request.method, target.path, _with_agent(request.headers), length)
            answer = await pool.request(target.origin, head + content if content else head)
            response = HttpResponse(answer.status, answer.body, answer.headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug('HTTP Request: %s %s "%d"', request.method, redact(url), response.status_code)
        return response

    async def _send_by_aiohttp(
        self,
        request: OutgoingRequest,
        url: str,
        proxy: URL | None,
        proxy_auth: aiohttp.BasicAuth | None,
    ) -> HttpResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections,
                    keepalive_timeout=KEEPALIVE_SECONDS,
                    ssl=ssl_context(),
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.timeout,
                    sock_connect=self.timeout,
                    sock_read=self.timeout,
                ),
                trust_env=False,  # proxies: _env_proxy, once per origin
            )
        content = request.content
        async with self._session.request(
            request.method,
            URL(url, encoded=True),  # sent as is: no re-quoting of a signed query
            headers=request.headers,
            data=content if content or request.method not in _BODILESS else None,
            allow_redirects=False,
            proxy=proxy,
            proxy_auth=proxy_auth,
        ) as response:
            return HttpResponse(response.status, await response.read(), response.headers)

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


_BODILESS = frozenset(("GET", "HEAD", "DELETE", "OPTIONS"))
USER_AGENT = "icc-channels"


def _with_agent(headers: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """The request's headers, and a User-Agent when it has none (gateways log it)."""
    agent = False
    for name, value in headers.items():
        agent = agent or name.lower() == "user-agent"
        yield name, value
    if not agent:
        yield "user-agent", USER_AGENT
