"""The HTTP client of the channel adapters: httpx's API over aiohttp's transport, which
keeps up under concurrency where httpx's own pool does not (encode/httpx#3215)."""

from __future__ import annotations

import httpx
from httpx_aiohttp import AiohttpTransport


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
