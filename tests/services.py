"""Where the test services are, and whether a test may skip without them (never under CI)."""

from __future__ import annotations

import asyncio
import os

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "ICC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ICC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, exc: BaseException) -> None:
    """Skip on a laptop without the service; fail under CI, where it must be there."""
    message = f"{what} is not reachable ({type(exc).__name__}: {exc})"
    if IN_CI:
        pytest.fail(message + " and CI=true: the service must run", pytrace=False)
    pytest.skip(message)


def postgres_available() -> BaseException | None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return exc
    return None


def redis_available() -> BaseException | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        return exc
    return None


def with_database(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


async def create_database(name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(POSTGRES_ADMIN_URL, name)


async def drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
