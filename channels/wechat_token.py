"""The WeChat access_token of one app_id, shared by every worker.

WeChat allows a limited number of token fetches a day, and with ``client_credential`` each
fetch replaces the previous token (the old one lives on for about five minutes). So N workers
must not each fetch their own: the token lives in Redis when the platform has one (one key per
app_id, expiring with the token minus a safety margin), and a short Redis lock lets one worker
refresh while the others wait and then read its result. Without Redis it lives in this process.

Each process also keeps the token it last saw, so a send costs no Redis round trip; when
WeChat rejects that token, ``refresh(rejected=...)`` first looks for a newer one in Redis
(another worker may have refreshed already) and fetches only if there is none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import orjson
from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("icc.channels.wechat")

KEY_PREFIX = "icc:wechat:access_token:"
SAFETY_MARGIN = 300  # seconds before WeChat's expiry that we stop using a token
LOCK_SECONDS = 10.0  # a refresh is one HTTP call; the lock outlives a slow one


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float  # epoch seconds, safety margin already taken off

    @classmethod
    def expiring(cls, value: str, expires_in: int) -> AccessToken:
        margin = min(SAFETY_MARGIN, max(expires_in, 0) // 2)
        return cls(value, time.time() + max(expires_in - margin, 1))

    def usable(self, rejected: str | None = None) -> bool:
        return self.value != rejected and self.expires_at > time.time()


Fetch = Callable[[str | None], Awaitable[AccessToken]]


class AccessTokenCache:
    """The access_token of one app_id: in Redis when ``redis_url`` is set, else in-process.

    ``fetch(rejected)`` asks WeChat for a token; ``rejected`` is the token WeChat just refused
    (or None), so a fetcher that can be handed the same token again knows to force a new one.
    """

    def __init__(self, fetch: Fetch, *, app_id: str, redis_url: str | None) -> None:
        self._fetch = fetch
        self._key = KEY_PREFIX + app_id
        self._lock_key = self._key + ":lock"
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self._local: AccessToken | None = None
        self._renewing = asyncio.Lock()

    async def get(self) -> str:
        if self._local is not None and self._local.usable():
            return self._local.value
        return await self._renew(rejected=None)

    async def refresh(self, *, rejected: str) -> str:
        """A token WeChat refused: return a different one, fetching only if no one did."""
        return await self._renew(rejected=rejected)

    async def _renew(self, *, rejected: str | None) -> str:
        # One renewal per process at a time: concurrent sends all wait for the same token.
        async with self._renewing:
            if self._local is not None and self._local.usable(rejected):
                return self._local.value
            if self._redis is None:
                self._local = await self._fetch(rejected)
            else:
                self._local = await self._renew_shared(self._redis, rejected)
            return self._local.value

    async def _renew_shared(self, redis: aioredis.Redis, rejected: str | None) -> AccessToken:
        try:
            shared = await self._read(redis)
            if shared is not None and shared.usable(rejected):
                return shared
            return await self._renew_locked(redis, rejected)
        except RedisError as exc:
            # Redis down must not stop WeChat sends: fetch for this process alone.
            log.warning("wechat token cache: Redis unavailable (%s)", type(exc).__name__)
            return await self._fetch(rejected)

    async def _renew_locked(self, redis: aioredis.Redis, rejected: str | None) -> AccessToken:
        lock = redis.lock(self._lock_key, timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
        # Not acquired means the holder outlived the lock: go on rather than fail the send.
        acquired = await lock.acquire()
        try:
            # Whoever held the lock before us may have just stored a fresh token.
            shared = await self._read(redis)
            if shared is not None and shared.usable(rejected):
                return shared
            token = await self._fetch(rejected)
            await self._write(redis, token)
            return token
        finally:
            if acquired:
                with suppress(RedisError):  # expired meanwhile (LockError) or Redis gone
                    await lock.release()

    async def _read(self, redis: aioredis.Redis) -> AccessToken | None:
        raw = await redis.get(self._key)
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            return AccessToken(str(data["access_token"]), float(data["expires_at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # a foreign or corrupt value: fetch and overwrite it

    async def _write(self, redis: aioredis.Redis, token: AccessToken) -> None:
        ttl = max(int(token.expires_at - time.time()), 1)
        value = orjson.dumps({"access_token": token.value, "expires_at": token.expires_at})
        try:
            await redis.set(self._key, value, ex=ttl)
        except RedisError as exc:
            # Keep the token we hold: fetching again would only replace it at WeChat.
            log.warning("wechat token cache: could not store (%s)", type(exc).__name__)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
