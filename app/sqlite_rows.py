"""The SQLite pipeline's bulk writes as plain executemany of ready tuples.

A Core ``insert(table)`` or ``update(table)`` run with a list of dicts costs SQLAlchemy, for
every row, a ``construct_params`` and a generator over the statement's columns applying
their bind processors: profiles of single sends on the embedded default put that at a
quarter of accepting a message, more than SQLite took to write it. Here the statement text
is made once per table and set of columns, each column's own bind processor (JSON by the
engine's serializer, UTC times, Money) is looked up once, and the rows go to the driver as
tuples as driver SQL (sqlite_inline.run_sql), in the session's transaction: the values stored are
those Core would have stored, defaults included (tests/test_sqlite_rows.py compares both).

PostgreSQL keeps its own paths (bulk_pg's COPY, pipeline_pg's arrays) and Core.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Processor, bound_column, column_processor, scalar_defaults
from app.sqlite_inline import run_sql


def applies(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether these rows can go this way: SQLite, and one set of keys for all rows (what
    Core's executemany requires too)."""
    if not rows or session.get_bind().dialect.name != "sqlite":
        return False
    keys = rows[0].keys()
    return all(row.keys() == keys for row in rows)


async def insert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    ignoring: tuple[str, ...] = (),
) -> int:
    """``INSERT`` the rows (``ignoring``: skip those that conflict on these columns, ``ON
    CONFLICT (...) DO NOTHING``); the number inserted. Columns the rows leave out get their
    Python default, as with Core."""
    dialect = session.get_bind().dialect
    plan = _insert_plan(dialect, table, _columns(table, rows[0]), ignoring)
    return await _run(session, plan.sql, plan.tuples(rows))


async def update_by_key(
    session: AsyncSession, table: Table, key: str, rows: Sequence[Mapping[str, Any]]
) -> int:
    """``UPDATE table SET <the rows' other keys> WHERE <key> = ?`` for each row; the number
    of rows changed."""
    dialect = session.get_bind().dialect
    names = tuple(name for name in _columns(table, rows[0]) if name != key)
    plan = _update_plan(dialect, table, names, key)
    return await _run(session, plan.sql, plan.tuples(rows))


async def _run(session: AsyncSession, sql: str, params: list[tuple[Any, ...]]) -> int:
    # one row: execute (Core would not take a list of one as executemany either)
    if len(params) == 1:
        return (await run_sql(session, sql, params[0])).rowcount
    return (await run_sql(session, sql, params, many=True)).rowcount


def _columns(table: Table, row: Mapping[str, Any]) -> tuple[str, ...]:
    """The row's keys that name columns: Core ignores the others."""
    return tuple(name for name in row if name in table.c)


class _Plan:
    """A statement's text, and how a row becomes its parameters."""

    def __init__(
        self, sql: str, names: tuple[str, ...], processors: tuple[Processor, ...], defaults: Any
    ) -> None:
        self.sql = sql
        self.names = names
        self.processors = processors
        self.defaults: tuple[tuple[str, Any], ...] = defaults  # left out: (name, bound value)

    def tuples(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        # column by column: a column's values share its processor, and a group's rows often
        # share a value (its `now`), processed once
        columns: list[list[Any]] = []
        for name, process in zip(self.names, self.processors, strict=True):
            columns.append(bound_column(process, [row[name] for row in rows]))
        for _, value in self.defaults:
            columns.append([value] * len(rows))
        return list(zip(*columns, strict=True))


@functools.cache
def _insert_plan(
    dialect: Dialect, table: Table, names: tuple[str, ...], ignoring: tuple[str, ...]
) -> _Plan:
    defaults = scalar_defaults(table, names)
    columns = names + tuple(defaults)
    quoted = ", ".join(_quote(dialect, table, name) for name in columns)
    sql = (
        f"INSERT INTO {_table(dialect, table)} ({quoted}) VALUES ({', '.join('?' * len(columns))})"
    )
    if ignoring:
        sql += f" ON CONFLICT ({', '.join(_quote(dialect, table, c) for c in ignoring)}) DO NOTHING"
    processed = tuple(
        (name, bound_column(column_processor(dialect, table, name), [value])[0])
        for name, value in defaults.items()
    )
    return _Plan(sql, names, tuple(column_processor(dialect, table, n) for n in names), processed)


@functools.cache
def _update_plan(dialect: Dialect, table: Table, names: tuple[str, ...], key: str) -> _Plan:
    if not names:
        raise ValueError(f"an update of {table.name} that sets nothing")
    for column in table.columns:
        if column.key not in names and (column.onupdate or column.server_onupdate):
            raise ValueError(f"{table.name}.{column.key}: an onupdate Core would apply")
    assignments = ", ".join(f"{_quote(dialect, table, name)} = ?" for name in names)
    where = f"{_quote(dialect, table, key)} = ?"
    sql = f"UPDATE {_table(dialect, table)} SET {assignments} WHERE {where}"
    columns = (*names, key)
    return _Plan(sql, columns, tuple(column_processor(dialect, table, n) for n in columns), ())


def _quote(dialect: Dialect, table: Table, key: str) -> str:
    """The column's name (not its key) as the dialect quotes it."""
    return dialect.identifier_preparer.quote(table.c[key].name)


def _table(dialect: Dialect, table: Table) -> str:
    return dialect.identifier_preparer.format_table(table)
