"""PostgreSQL bulk writes for large groups of rows: COPY instead of executemany.

SQLAlchemy's executemany spends most of a 10,000-message batch in Python, turning each row's
parameters into statements; COPY hands whole records to asyncpg's binary encoder. Both run on
the session's own connection and transaction, so the rows commit or roll back with everything
else the request wrote, and after-commit hooks (enqueueing) still wait for the commit.

Values go through the same SQLAlchemy bind processors as an ordinary insert (JSON through the
project's orjson serializer, UTC datetimes, Money), so COPY stores exactly what executemany
would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_name

# Below this many rows executemany wins: COPY costs a round trip or two more (measured: about
# even at 100 rows, COPY 25% faster at 500 and 2-3x at 10,000).
MIN_ROWS = 200

Row = Mapping[str, Any]


def applies(session: AsyncSession, count: int) -> bool:
    """Whether ``count`` rows are worth COPYing on this session's database."""
    return count >= MIN_ROWS and dialect_name(session) == "postgresql"


async def copy_rows(session: AsyncSession, table: Table, rows: Sequence[Row]) -> None:
    """COPY ``rows`` (dicts with the same keys, as for executemany) into ``table``."""
    if rows:
        driver = await _driver(session)
        columns, records = _records(table, rows, session.get_bind().dialect)
        await driver.copy_records_to_table(table.name, records=records, columns=columns)


async def insert_ignoring_conflicts(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Row],
    *,
    conflict: Sequence[str],
    returning: str,
) -> set[Any]:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING RETURNING returning`` by COPY.

    Rows with a NULL in a conflict column cannot conflict (unique constraints treat NULLs as
    distinct), so they are COPYed straight into the table. The others are COPYed into a
    temporary table and moved with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: the
    unique constraint, not this code, decides which of them are new, also against concurrent
    transactions."""
    free: list[Row] = []
    keyed: list[Row] = []
    for row in rows:
        (free if None in [row[c] for c in conflict] else keyed).append(row)
    await copy_rows(session, table, free)
    inserted = {r[returning] for r in free}
    if keyed:
        inserted |= await _insert_through_temp(session, table, keyed, conflict, returning)
    return inserted


async def _insert_through_temp(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Row],
    conflict: Sequence[str],
    returning: str,
) -> set[Any]:
    driver = await _driver(session)
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    columns, records = _records(table, rows, dialect)
    temp_name = f"icc_bulk_{table.name}"
    temp, target = quote(temp_name), quote(table.name)
    names = ", ".join(quote(c) for c in columns)
    # ON COMMIT DROP in case of an error below; dropped at once otherwise, so that a second
    # group in the same transaction finds no leftovers
    await driver.execute(f"CREATE TEMP TABLE {temp} (LIKE {target}) ON COMMIT DROP")
    await driver.copy_records_to_table(temp_name, records=records, columns=columns)
    found = await driver.fetch(
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {temp} "
        f"ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO NOTHING "
        f"RETURNING {quote(returning)}"
    )
    await driver.execute(f"DROP TABLE {temp}")
    return {row[0] for row in found}


async def _driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, inside the session's transaction."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter opens its transaction lazily, at its first statement;
        # a COPY before that would commit on its own
        await connection.exec_driver_sql("SELECT 1")
    return driver


def _records(
    table: Table, rows: Sequence[Row], dialect: Dialect
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, one tuple per row): the rows' own columns plus those with a scalar
    Python-side default (which executemany would fill in), bind-processed column by column."""
    given = list(rows[0])
    columns = {name: [row[name] for row in rows] for name in given}
    for name, value in _scalar_defaults(table, given).items():
        columns[name] = [value] * len(rows)
    values = []
    for name, column in columns.items():
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            values.append(column)
        elif _all_same(column):  # e.g. created_at: one value for the whole group
            values.append([process(column[0])] * len(column))
        else:
            values.append(list(map(process, column)))
    return list(columns), list(zip(*values, strict=True))


def _all_same(column: list[Any]) -> bool:
    """Whether every value is the very same object (identity, not equality: 1 == True)."""
    first = column[0]
    return all(value is first for value in column)


def _scalar_defaults(table: Table, given: Sequence[str]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.name in given or default is None:
            continue
        if not default.is_scalar:
            raise ValueError(f"COPY into {table.name} needs a value for {column.name}")
        defaults[column.name] = getattr(default, "arg", None)
    return defaults
