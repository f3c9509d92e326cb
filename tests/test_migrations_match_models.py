"""The migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from app.db import create_engine
from app.models import Base
from app.settings import async_database_url


def _compare(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _differences(url: str) -> list[Any]:
    engine = create_engine(async_database_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_compare)
    finally:
        await engine.dispose()


# SQLite's reflection skips indexes on expressions (ix_messages_patched_reach), so this
# cannot compare that one: tests/test_query_plans.py checks that SQLite's statements use it
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_sqlite_schema_matches_models(sqlite_template: Path) -> None:
    assert asyncio.run(_differences(f"sqlite:///{sqlite_template}")) == []


def test_postgres_schema_matches_models(postgres_url: str) -> None:
    assert asyncio.run(_differences(postgres_url)) == []
