"""The key property: for any valid rule, the Python predicate and the SQL on real SQLite and
PostgreSQL databases (the ``customers`` table of the migrations) pick the same customers."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Coroutine, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    Text,
    cast,
    delete,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from app.customers.models import Customer
from app.db import create_engine
from app.timeutil import utcnow
from strategies.attributes import profile_of
from strategies.predicate import compile_predicate
from strategies.rules import validate
from strategies.sql import compile_sql
from tests.strategies import samples

T = TypeVar("T")
BUILTIN_COLUMNS: Mapping[str, SQLColumnExpression[Any]] = {
    "locale": Customer.locale,
    "timezone": Customer.timezone,
}
PREFIX = "seg-"


class Database:
    """One database with the population inserted; sync calls into its own event loop,
    because hypothesis drives the test synchronously."""

    def __init__(self, dialect: str, url: str) -> None:
        self.dialect = dialect
        self.runner = asyncio.Runner()
        self.engine: AsyncEngine = self.run(_engine(url))
        self.profiles: dict[str, dict[str, Any]] = {}
        self.stored: dict[str, Any] = {}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def close(self) -> None:
        self.run(self._remove())
        self.run(self.engine.dispose())
        self.runner.close()

    async def load(self, rows: list[dict[str, Any]]) -> None:
        await self._remove()
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Customer), [{**r, "created_at": now, "updated_at": now} for r in rows]
            )
            query = select(Customer.id, Customer.attributes, Customer.locale, Customer.timezone)
            for row in await conn.execute(query.where(Customer.id.startswith(PREFIX))):
                self.stored[row.id] = row.attributes
                self.profiles[row.id] = profile_of(
                    row.attributes, locale=row.locale, timezone=row.timezone
                )

    async def select(self, where: ColumnElement[bool]) -> set[str]:
        query = select(Customer.id).where(Customer.id.startswith(PREFIX), where)
        async with self.engine.connect() as conn:
            return set((await conn.scalars(query)).all())

    async def evaluate(self, where: ColumnElement[bool]) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(select(where))

    async def _remove(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(Customer).where(Customer.id.startswith(PREFIX)))


async def _engine(url: str) -> AsyncEngine:
    return create_engine(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("segments") / "segments.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")  # migrated by the session fixture
    db = Database(request.param, url)
    rows = samples.population()
    db.run(db.load(rows))
    # JSON reads back as written: the predicate sees what the writer stored
    assert db.stored == {r["id"]: r["attributes"] for r in rows}
    yield db
    db.close()


@settings(max_examples=150, deadline=None)
@given(raw=samples.rules, now=st.sampled_from(samples.NOWS))
def test_sql_selects_the_customers_the_predicate_accepts(
    database: Database, raw: dict[str, Any], now: datetime
) -> None:
    rule = validate(raw, samples.SCHEMA)
    predicate = compile_predicate(rule, clock=now.timestamp)
    expected = {i for i, profile in database.profiles.items() if predicate(profile)}
    where = compile_sql(
        rule,
        attributes_column=Customer.attributes,
        columns=BUILTIN_COLUMNS,
        dialect=database.dialect,
        now=now,
    )
    assert database.run(database.select(where)) == expected


@settings(max_examples=150, deadline=None)
@given(raw=samples.rules, profile=samples.profiles, now=st.sampled_from(samples.NOWS))
def test_sql_agrees_on_any_single_profile(
    database: Database, raw: dict[str, Any], profile: dict[str, Any], now: datetime
) -> None:
    """Random stored profiles, evaluated as a bound JSON value: the SQL is never NULL."""
    rule = validate(raw, samples.SCHEMA)
    attributes = {k: v for k, v in profile.items() if k not in ("locale", "timezone")}
    document = literal(orjson.dumps(attributes).decode(), Text)
    builtins = {name: literal(profile[name], Text) for name in ("locale", "timezone")}
    expression = compile_sql(
        rule,
        attributes_column=cast(document, JSONB) if database.dialect == "postgresql" else document,
        columns=builtins,
        dialect=database.dialect,
        now=now,
    )
    result = database.run(database.evaluate(expression))
    assert result is not None
    stored = profile_of(attributes, locale=profile["locale"], timezone=profile["timezone"])
    assert bool(result) == compile_predicate(rule, clock=now.timestamp)(stored)
