"""Migrations on PostgreSQL: index changes run CONCURRENTLY (sends go on meanwhile), and
replicas starting together migrate one after the other without deadlocking on them."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, text

import app.db
from app.migrate import alembic_config
from tests.worker_procs import ICC


async def _indexes(url: str) -> dict[str, bool]:
    engine = app.db.create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.relname, i.indisvalid FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_class t ON t.oid = i.indrelid "
                    "WHERE t.relname IN ('messages', 'outbox')"
                )
            )
            return {str(name): bool(valid) for name, valid in rows.all()}
    finally:
        await engine.dispose()


def test_index_changes_on_messages_run_concurrently(
    empty_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = alembic_config(empty_postgres)
    command.upgrade(config, "0010")
    statements: list[str] = []
    create_engine = app.db.create_engine

    def recording(*args: Any, **kwargs: Any) -> Any:
        engine = create_engine(*args, **kwargs)

        def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            statements.append(" ".join(statement.split()))

        event.listen(engine.sync_engine, "before_cursor_execute", record)
        return engine

    monkeypatch.setattr(app.db, "create_engine", recording)  # env.py imports it at each run
    command.upgrade(config, "head")
    ddl = [s for s in statements if s.startswith(("CREATE INDEX", "DROP INDEX"))]
    assert "CREATE INDEX CONCURRENTLY ix_messages_status_id ON messages (status, id)" in ddl
    assert "DROP INDEX CONCURRENTLY IF EXISTS ix_messages_created_at" in ddl
    assert any(s.startswith("CREATE INDEX CONCURRENTLY ix_messages_sent_provider_id") for s in ddl)
    on_big_tables = [s for s in ddl if " ON messages " in s or " ON outbox " in s]
    assert on_big_tables, ddl
    assert all("CONCURRENTLY" in s for s in on_big_tables), on_big_tables
    indexes = asyncio.run(_indexes(empty_postgres))
    assert all(indexes.values()), indexes
    assert "ix_messages_created_at" not in indexes


def test_replicas_starting_together_migrate_one_after_the_other(empty_postgres: str) -> None:
    env = {**os.environ, "ICC_DATABASE_URL": empty_postgres}
    procs = [
        subprocess.Popen(
            [str(ICC), "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120)[0].decode(errors="replace") for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    indexes = asyncio.run(_indexes(empty_postgres))
    assert indexes.get("ix_messages_sent_provider_id") is True, indexes
    assert all(indexes.values()), indexes
