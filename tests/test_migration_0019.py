"""Migration 0019 drops the foreign keys of message_events and outbox to messages: their rows
stay as they were (SQLite rebuilds both tables), the checks are gone, and the downgrade
brings them back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.db import create_engine
from app.migrate import alembic_config, ensure_sqlite_dir

# a message with the columns migration 0018 has, one event and its outbox row
_MESSAGE = """
INSERT INTO messages (id, owner, scenario, customer_id, recipient, variables, channels,
    channel_index, status, attempts, channel_attempts, content, decision, created_at,
    updated_at)
VALUES ('msg_1', 'core', 'account_movement', 'C1', '{}', '{}', '["sms"]', 0, 'queued', 0, 0,
    '{}', '{}', '2026-12-07 00:00:00+00:00', '2026-12-07 00:00:00+00:00')
"""
_EVENT = (
    "INSERT INTO message_events (message_id, type, at, detail) "
    "VALUES (:m, 'sending', '2026-12-07 00:00:01+00:00', '{}')"
)
_OUTBOX = "INSERT INTO outbox (message_id, due_at) VALUES (:m, '2026-12-07 00:00:00+00:00')"


async def _run(url: str, *statements: tuple[str, dict[str, str]]) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for sql, params in statements:
                await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


async def _rows(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            events = await conn.execute(text("SELECT message_id, type FROM message_events"))
            outbox = await conn.execute(text("SELECT message_id FROM outbox"))
            return [tuple(r) for r in events], [tuple(r) for r in outbox]
    finally:
        await engine.dispose()


def _orphans(url: str, message_id: str) -> None:
    """An event and an outbox row of a message that does not exist."""
    statements = ((_EVENT, {"m": message_id}), (_OUTBOX, {"m": message_id}))
    asyncio.run(_run(url, *statements))


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        sqlite = f"sqlite:///{tmp_path / 'icc.db'}"
        ensure_sqlite_dir(sqlite)
        return sqlite
    postgres: str = request.getfixturevalue("empty_postgres")
    return postgres


def test_rows_stay_and_the_checks_go(database: str) -> None:
    config = alembic_config(database)
    command.upgrade(config, "0018")
    asyncio.run(_run(database, (_MESSAGE, {}), (_EVENT, {"m": "msg_1"}), (_OUTBOX, {"m": "msg_1"})))
    with pytest.raises(IntegrityError):  # before: checked
        _orphans(database, "msg_gone")

    command.upgrade(config, "0019")
    assert asyncio.run(_rows(database)) == ([("msg_1", "sending")], [("msg_1",)])
    _orphans(database, "msg_gone")  # no check any more
    assert asyncio.run(_rows(database))[1] == [("msg_1",), ("msg_gone",)]

    asyncio.run(_run(database, ("DELETE FROM message_events WHERE message_id = 'msg_gone'", {})))
    asyncio.run(_run(database, ("DELETE FROM outbox WHERE message_id = 'msg_gone'", {})))
    command.downgrade(config, "0018")
    assert asyncio.run(_rows(database)) == ([("msg_1", "sending")], [("msg_1",)])
    with pytest.raises(IntegrityError):  # checked again
        _orphans(database, "msg_gone")
