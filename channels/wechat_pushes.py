"""Which body each signed WeChat push came with, for as long as its signature is accepted.

WeChat's plaintext signature covers token, timestamp and nonce, not the body: within the
window ``verify_signature`` accepts, someone who saw a signed URL could post another body
under it. A push WeChat sends again (no answer within 5 s) carries the same body, and
receipts and replies count once however often they come, so only another body is refused.

The bodies' digests live in Redis when the platform has one (every API replica sees them),
else in this process; with Redis unavailable, this process remembers alone.
"""

from __future__ import annotations

import hashlib
import logging
import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from channels.errors import CallbackAuthError
from channels.wechat_events import MAX_PUSH_SKEW

log = logging.getLogger("icc.channels.wechat")

KEY_PREFIX = "icc:wechat:push:"
# a timestamp is accepted from MAX_PUSH_SKEW before it until MAX_PUSH_SKEW after it
WINDOW = int(2 * MAX_PUSH_SKEW)


class PushLedger:
    """The body digest of each signed query (timestamp, nonce) of one app_id."""

    def __init__(self, *, app_id: str, redis_url: str | None) -> None:
        self._prefix = f"{KEY_PREFIX}{app_id}:"
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self._local: dict[str, tuple[bytes, float]] = {}  # in expiry order

    async def check(self, timestamp: str, nonce: str, body: bytes) -> None:
        """Raise CallbackAuthError if this signed query came with another body before."""
        # hashed: a nonce is the pusher's text, of any length
        key = self._prefix + hashlib.sha256(f"{timestamp}\n{nonce}".encode()).hexdigest()
        digest = hashlib.sha256(body).digest()
        if await self._remember(key, digest) != digest:
            raise CallbackAuthError("this signed push came before with another body: a replay")

    async def _remember(self, key: str, digest: bytes) -> bytes:
        """The digest kept under ``key``: ``digest`` if it is the first."""
        if self._redis is not None:
            try:
                return await self._remember_shared(self._redis, key, digest)
            except RedisError as exc:
                log.warning("wechat push ledger: Redis unavailable (%s)", type(exc).__name__)
        return self._remember_local(key, digest)

    @staticmethod
    async def _remember_shared(redis: aioredis.Redis, key: str, digest: bytes) -> bytes:
        if await redis.set(key, digest, nx=True, ex=WINDOW):
            return digest
        kept = await redis.get(key)
        return digest if kept is None else bytes(kept)  # None: expired in between

    def _remember_local(self, key: str, digest: bytes) -> bytes:
        now = time.monotonic()
        while self._local:
            first = next(iter(self._local))
            if self._local[first][1] > now:
                break
            del self._local[first]
        kept, _ = self._local.setdefault(key, (digest, now + WINDOW))
        return kept

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
