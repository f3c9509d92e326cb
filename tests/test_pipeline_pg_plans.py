"""The worker's PostgreSQL statements (app/messages/pipeline_pg.py) reach messages and outbox
by key whatever the tables' statistics.

asyncpg prepares each statement once per connection, and from its sixth run PostgreSQL may
keep a generic plan for it, as it does for the foreign-key check of each event inserted.
Planned while the tables were nearly empty (a new database, or statistics from before a
burst), those plans scanned the tables, and went on scanning them once they had grown:
0.3-0.6 s a statement for 32 messages instead of 2-3 ms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.db import create_engine, create_sessionmaker
from app.messages import pipeline_pg
from app.messages.outcomes import Attempt, decide
from app.messages.repository import CLAIMABLE
from app.migrate import upgrade
from app.settings import RetrySettings
from app.timeutil import utcnow
from channels.base import SendResult
from channels.errors import TransientChannelError
from tests.conftest import new_postgres_database

WORKER = "worker-a"
RETRY = RetrySettings(max_attempts=3, base_delay=1.0, max_delay=10.0)
SENT = Attempt("sms", "sandbox-sms", 1.0, result=SendResult(provider_message_id="p-1"))
TIMEOUT = Attempt("sms", "sandbox-sms", 1.0, error=TransientChannelError("t", code="timeout"))

FILL = """
INSERT INTO messages (id, owner, scenario, customer_id, recipient, variables, channels,
    channel_index, status, attempts, channel_attempts, content, decision, created_at,
    updated_at)
SELECT :prefix || lpad(g::text, 6, '0'), 'core-banking', 'account_movement', 'C' || g,
    '{"phone": "13800001234"}', '{"amount": "1.00"}', '["sms", "email"]', 0, :status, 0, 0,
    '{"sms": {"body": "您好"}}', '{}', now(), now()
FROM generate_series(1, :count) AS g
"""
OUTBOX = """
INSERT INTO outbox (message_id, due_at, enqueued_at)
SELECT id, now(), now() FROM messages WHERE id LIKE :prefix || '%'
"""
SCANS = """
SELECT relname, seq_scan, idx_scan FROM pg_stat_xact_user_tables
WHERE relname IN ('messages', 'outbox')
"""


@pytest.fixture
def new_database() -> Iterator[str]:
    with new_postgres_database("icc_plans") as url:
        upgrade(url)
        yield url


async def _fill(conn: AsyncConnection, prefix: str, count: int, status: str) -> list[str]:
    """``count`` messages and, unless sent, their outbox rows, in two statements."""
    values = {"prefix": prefix, "count": count, "status": status}
    await conn.execute(text(FILL), values)
    if status != "sent":
        await conn.execute(text(OUTBOX), {"prefix": prefix})
    return [f"{prefix}{g:06d}" for g in range(1, count + 1)]


async def _transaction_scans(session: AsyncSession) -> Counter[tuple[str, str]]:
    """The scans of messages and outbox made so far in the session's transaction."""
    rows = await session.execute(text(SCANS))
    return Counter({(r.relname, k): getattr(r, k) for r in rows for k in ("seq_scan", "idx_scan")})


async def _flush_stats(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Have the backend flush its statistics as it goes idle: pg_stat_xact_* then count from
    the next transaction (they count from the last flush, earlier transactions included)."""
    async with sessions() as session:
        await session.execute(text("SELECT pg_stat_force_next_flush()"))
        await session.commit()


async def _send(
    sessions: async_sessionmaker[AsyncSession], ids: list[str]
) -> Counter[tuple[str, str]]:
    """Claim the messages and write their outcomes (three in four sent, the others due again),
    each in its own transaction as the worker does; the scans the two made."""
    now = utcnow()
    await _flush_stats(sessions)
    async with sessions() as session:
        claimed = await pipeline_pg.claim_for_sending(
            session,
            ids,
            statuses=CLAIMABLE,
            worker=WORKER,
            now=now,
            lease_until=now + timedelta(minutes=1),
        )
        scans = await _transaction_scans(session)
        await session.commit()
    assert sorted(c.id for c in claimed) == ids
    outcomes = [
        decide(c, [TIMEOUT if i % 4 == 0 else SENT], RETRY, now) for i, c in enumerate(claimed)
    ]
    await _flush_stats(sessions)
    async with sessions() as session:
        held = await pipeline_pg.write_held_outcomes(session, outcomes, worker=WORKER)
        scans += await _transaction_scans(session)
        await session.commit()
    assert held == set(ids)
    return scans


async def test_plans_made_on_nearly_empty_tables_go_by_key_once_they_have_grown(
    new_database: str,
) -> None:
    engine = create_engine(new_database, pool_size=1)  # one connection: one plan cache
    sessions = create_sessionmaker(engine)
    try:
        async with engine.begin() as conn:
            for table in ("messages", "outbox", "message_events"):
                await conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            early = await _fill(conn, "early-", 32, "queued")
            await conn.execute(text("ANALYZE"))
        for i in range(0, 32, 4):  # each statement run 8 times: its plan is kept from the 6th
            await _send(sessions, early[i : i + 4])
        async with engine.begin() as conn:  # a burst, and no ANALYZE since
            await _fill(conn, "sent-", 20000, "sent")
            due = await _fill(conn, "due-", 10000, "queued")
        scans = await _send(sessions, due[:32])
    finally:
        await engine.dispose()
    assert scans[("messages", "seq_scan")] == 0, scans
    assert scans[("outbox", "seq_scan")] == 0, scans
    assert scans[("messages", "idx_scan")] > 0, scans
    assert scans[("outbox", "idx_scan")] > 0, scans
