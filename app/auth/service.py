"""API keys: random secrets stored as SHA-256 hashes (high-entropy keys need no slow hash)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import repository
from app.auth.models import ApiKey
from app.auth.schemas import Role
from app.errors import Conflict, NotFound
from app.ids import new_id
from app.timeutil import utcnow

KEY_PREFIX = "icc_"


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    owner: str
    role: Role


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    role: Role,
    owner: str | None = None,
    plaintext: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext, which is never stored."""
    if await repository.by_name(session, name) is not None:
        raise Conflict(f"a key named {name!r} already exists; choose another name")
    plaintext = plaintext or generate_key()
    key = ApiKey(
        id=new_id("key"),
        name=name,
        owner=owner or name,
        role=role.value,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:8],
        created_at=utcnow(),
    )
    await repository.add(session, key)
    return key, plaintext


async def ensure_key(session: AsyncSession, *, name: str, role: Role, plaintext: str) -> None:
    """Make ``plaintext`` a working key of ``role`` named ``name`` (the bootstrap admin key):
    the configuration wins over a revocation or an older secret. Safe to repeat."""
    row = await repository.by_hash(session, hash_key(plaintext))
    if row is not None and row.name != name:
        raise ConfigurationError(f"the bootstrap key is already the secret of key {row.name!r}")
    row = row or await repository.by_name(session, name)
    if row is None:
        await create_key(session, name=name, role=role, plaintext=plaintext)
        return
    row.key_hash, row.prefix, row.role, row.revoked_at = (
        hash_key(plaintext),
        plaintext[:8],
        role,
        None,
    )
    await session.flush()


class ConfigurationError(Exception):
    """Settings that cannot work; raised at start."""


async def revoke_key(session: AsyncSession, key_id: str) -> None:
    if not await repository.revoke(session, key_id, utcnow()):
        raise NotFound(f"no active key with id {key_id!r}")


class KeyCache:
    """Caches key lookups for a few seconds so the hot send path skips one query.
    A revoked key stops working within ``ttl`` seconds.

    Concurrent misses for one key share one lookup, and a key in use is looked up again in
    the background during the last fifth of its time, while the cached answer still serves:
    otherwise every expiry sent each request in flight to the database at once (a burst
    that showed as the send API's p99)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def resolve(
        self, sessions: async_sessionmaker[AsyncSession], plaintext: str
    ) -> Principal | None:
        digest = hash_key(plaintext)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            if hit[0] - now < self._ttl / 5 and digest not in self._lookups:
                self._start_lookup(sessions, digest)  # refresh ahead; answer from the cache
            return hit[1]
        lookup = self._lookups.get(digest) or self._start_lookup(sessions, digest)
        return await asyncio.shield(lookup)

    def _start_lookup(
        self, sessions: async_sessionmaker[AsyncSession], digest: str
    ) -> asyncio.Future[Principal | None]:
        task = asyncio.ensure_future(self._lookup(sessions, digest))
        self._lookups[digest] = task

        def done(finished: asyncio.Future[Principal | None]) -> None:
            self._lookups.pop(digest, None)
            if not finished.cancelled():
                finished.exception()  # a failed refresh is retried by the next request

        task.add_done_callback(done)
        return task

    async def _lookup(
        self, sessions: async_sessionmaker[AsyncSession], digest: str
    ) -> Principal | None:
        async with sessions() as session:
            row = await repository.by_hash(session, digest)
        principal = None
        if row is not None and row.revoked_at is None:
            principal = Principal(
                key_id=row.id, name=row.name, owner=row.owner, role=Role(row.role)
            )
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self._ttl, principal)
        return principal

    def clear(self) -> None:
        self._entries.clear()
