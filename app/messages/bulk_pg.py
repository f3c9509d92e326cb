"""PostgreSQL bulk writes for large groups of rows: COPY instead of executemany.

SQLAlchemy's executemany spends most of a 10,000-message batch in Python, turning each row's
parameters into statements; COPY hands whole records to asyncpg's binary encoder. Both run on
the session's own connection and transaction, so the rows commit or roll back with everything
else the request wrote, and after-commit hooks (enqueueing) still wait for the commit.

Rows may come lazily (a generator that prepares each message): COPY streams, so PostgreSQL
stores the first rows on its own core while this process still makes the later ones.

Values go through the same SQLAlchemy bind processors as an ordinary insert (JSON through the
project's orjson serializer, UTC datetimes, Money), so COPY stores exactly what executemany
would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import bound_column, column_processor, dialect_name, scalar_defaults

# Below this many rows executemany wins: COPY costs a round trip or two more (measured: about
# even at 100 rows, COPY 25% faster at 500 and 2-3x at 10,000).
MIN_ROWS = 200
# Rows bind-processed together while a COPY streams: column by column is several times
# cheaper than row by row, and asyncpg sends about every 700 message rows (512 KiB) anyway.
STREAM_CHUNK = 500

Row = Mapping[str, Any]


def applies(session: AsyncSession, count: int) -> bool:
    """Whether ``count`` rows are worth COPYing on this session's database."""
    return count >= MIN_ROWS and dialect_name(session) == "postgresql"


async def copy_rows(session: AsyncSession, table: Table, rows: Iterable[Row]) -> None:
    """COPY ``rows`` (dicts with the same keys, as for executemany) into ``table``."""
    iterator = iter(rows)
    first = next(iterator, None)
    if first is not None:
        await _copy(session, table, table.name, chain([first], iterator), first)


async def insert_ignoring_conflicts(
    session: AsyncSession,
    table: Table,
    rows: Iterable[Row],
    *,
    conflict: Sequence[str],
    returning: str,
) -> set[Any]:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING RETURNING returning`` by COPY.

    Rows with a NULL in a conflict column cannot conflict (unique constraints treat NULLs as
    distinct), so they are COPYed straight into the table. The others are COPYed into a
    temporary table and moved with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: the
    unique constraint, not this code, decides which of them are new, also against concurrent
    transactions. Rows of the first row's kind stream; the others (in a mixed group) are set
    aside and written after them."""
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return set()
    keyed_first = _has_key(first, conflict)
    aside: list[Row] = []
    streamed: list[Any] = []  # the keys of the keyless rows streamed: all of them are inserted

    def same_kind() -> Iterator[Row]:
        for row in chain([first], iterator):
            if _has_key(row, conflict) != keyed_first:
                aside.append(row)
            else:
                if not keyed_first:
                    streamed.append(row[returning])
                yield row

    if keyed_first:
        inserted = await _insert_through_temp(
            session, table, same_kind(), first, conflict, returning
        )
        free, keyed = aside, []
    else:
        await copy_rows(session, table, same_kind())
        inserted, free, keyed = set(streamed), [], aside
    await copy_rows(session, table, free)
    inserted.update(row[returning] for row in free)
    if keyed:
        inserted |= await _insert_through_temp(session, table, keyed, keyed[0], conflict, returning)
    return inserted


def _has_key(row: Row, conflict: Sequence[str]) -> bool:
    return None not in [row[column] for column in conflict]  # cheaper than all() of a genexpr


async def _insert_through_temp(
    session: AsyncSession,
    table: Table,
    rows: Iterable[Row],
    first: Row,
    conflict: Sequence[str],
    returning: str,
) -> set[Any]:
    driver = await driver_connection(session)
    quote = session.get_bind().dialect.identifier_preparer.quote
    temp_name = f"icc_bulk_{table.name}"
    temp, target = quote(temp_name), quote(table.name)
    # ON COMMIT DROP in case of an error below; dropped at once otherwise, so that a second
    # group in the same transaction finds no leftovers
    await driver.execute(f"CREATE TEMP TABLE {temp} (LIKE {target}) ON COMMIT DROP")
    columns = await _copy(session, table, temp_name, rows, first)
    names = ", ".join(quote(c) for c in columns)
    found = await driver.fetch(
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {temp} "
        f"ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO NOTHING "
        f"RETURNING {quote(returning)}"
    )
    await driver.execute(f"DROP TABLE {temp}")
    return {row[0] for row in found}


async def _copy(
    session: AsyncSession, table: Table, into: str, rows: Iterable[Row], first: Row
) -> list[str]:
    """COPY ``rows`` (shaped like ``first``) into the table named ``into``; the columns."""
    driver = await driver_connection(session)
    dialect = session.get_bind().dialect
    given = list(first)
    defaults = scalar_defaults(table, given)
    columns = given + list(defaults)
    processors = [column_processor(dialect, table, c) for c in columns]

    def records() -> Iterator[tuple[Any, ...]]:
        iterator = iter(rows)
        while chunk := list(islice(iterator, STREAM_CHUNK)):
            values = [[row[name] for row in chunk] for name in given]
            values += [[value] * len(chunk) for value in defaults.values()]
            yield from zip(*map(bound_column, processors, values), strict=True)

    await driver.copy_records_to_table(into, records=records(), columns=columns)
    return columns


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, inside the session's transaction."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter opens its transaction lazily, at its first statement;
        # a COPY before that would commit on its own
        await connection.exec_driver_sql("SELECT 1")
    return driver
