"""Database plumbing: declarative base, portable column types, engines and sessions.

SQLite (aiosqlite, WAL) is the embedded default and PostgreSQL (asyncpg) the scale-out
database; models and queries are written once for both.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import zlib
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnElement,
    DateTime,
    MetaData,
    Numeric,
    String,
    any_,
    bindparam,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.settings import async_database_url
from app.sqlite_inline import InlineConnection, inline_creator, observed, run_sql
from app.timeutil import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_utc_text()
        return super().bind_processor(dialect)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def read_sqlite_utc(stored: str) -> datetime:
    """A UTCDateTime as SQLite stores it (UTC, no offset), read as the column reads it:
    aware, in UTC. For the statements that read their rows themselves (in one step, not
    DATETIME's parsing and then process_result_value)."""
    return datetime.fromisoformat(stored).replace(tzinfo=UTC)


async def sqlite_select_in(
    session: AsyncSession, sql: str, values: Collection[str], *params: Any
) -> list[Any]:
    """SQLite: the rows of ``sql``, whose first parameter is ``values`` as ONE JSON array
    (``x IN (SELECT value FROM json_each(?))``), run as driver SQL: a fixed text whatever
    the number of values, without a Core select's building, cache key and parameter
    processing, which cost three to six times the query itself for a group's lookups."""
    return (await run_sql(session, sql, (json_array(values), *params))).rows


def json_array(values: Collection[str]) -> str:
    """``values`` as the one JSON parameter that ``json_each(?)`` reads (SQLite)."""
    return orjson.dumps(list(values)).decode()


def _sqlite_utc_text() -> Callable[[Any], str | None]:
    """UTCDateTime's bind processor on SQLite: the value in UTC as SQLAlchemy's DATETIME
    stores it (``YYYY-MM-DD HH:MM:SS.ffffff``), in one step instead of process_bind_param
    and then DATETIME's %-formatting of a dict of fields, which profiles showed at 4% of a
    send. The rows of a group share their ``now``: the last value's text is kept."""
    last: tuple[Any, str | None] = (None, None)

    def process(value: Any) -> str | None:
        nonlocal last
        if value is None:
            return None
        seen = last  # one tuple: readers in other threads never see a half-made pair
        if seen[0] is value:
            return seen[1]
        if not isinstance(value, datetime):
            raise TypeError(f"a UTCDateTime takes a datetime, not {type(value).__name__}")
        text = as_utc(value).isoformat(" ", "microseconds")[:26]  # without the +00:00
        last = (value, text)
        return text

    return process


JSONType = JSON().with_variant(JSONB(), "postgresql")
# None is SQL NULL here (in JSONType, JSON's null): for columns tested with IS NULL
NullableJSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Money(TypeDecorator[Decimal]):
    """Exact decimal amounts: NUMERIC on PostgreSQL, decimal text on SQLite (whose numbers
    are floats). SQLite's SUM() still reads the text as numbers."""

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


AfterCommit = Callable[[], Awaitable[None]]
log = logging.getLogger("icc.db")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# orjson: several times faster than the stdlib on the JSON columns of every message
_JSON_CODEC: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": orjson.loads}
READ_ONLY_OPTION = "icc_read_only"


WAL_BACKSTOP_PAGES = 50_000  # about 200 MB of WAL before the writer checkpoints itself


def create_engine(url: str, *, pool_size: int = 10, read_only: bool = False) -> AsyncEngine:
    """The engine for ``url``. On SQLite the writing engine has ONE connection: writers of
    this process queue for it in asyncio instead of in SQLite's busy handler, which sleeps
    1-100 ms between tries; ``read_only`` engines read in parallel beside it (WAL)."""
    url = async_database_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, read_only=read_only)
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, **_JSON_CODEC
    )


def _sqlite_engine(url: str, *, read_only: bool) -> AsyncEngine:
    options: dict[str, Any] = {"connect_args": {"timeout": 30}}
    if not read_only and ":memory:" not in url:
        # The writer runs inline on the loop's thread (app/sqlite_inline.py: thread hops
        # cost more than its short statements); readers keep aiosqlite's threads.
        args, kwargs = aiosqlite_dialect().create_connect_args(make_url(url))
        options = {"async_creator": inline_creator(args, kwargs)}
    engine = create_async_engine(
        url,
        **options,
        pool_size=4 if read_only else 1,
        max_overflow=0,
        pool_timeout=60,
        execution_options={READ_ONLY_OPTION: True} if read_only else {},
        **_JSON_CODEC,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so that we can BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        inline = not read_only and ":memory:" not in url
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            # The inline writer waits for locks asynchronously, never in the busy handler,
            # and leaves checkpoints (which write the database file and sync it) to
            # `checkpoint_forever`, off the loop; a large limit remains as a backstop.
            f"busy_timeout={0 if inline else 30000}",
            f"wal_autocheckpoint={WAL_BACKSTOP_PAGES if inline else 1000}",
            "journal_size_limit=67108864",  # a WAL grown by a big batch shrinks back to 64 MB
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that later writes can fail at once with "database is
        # locked" (no busy wait on lock upgrade), so writers take the lock up front.
        # Read-only sessions stay deferred: in WAL mode they never block the writer.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION)
        driver = conn.connection.driver_connection
        # directly (sqlite_inline.run_sql), unless it has to wait for the lock
        direct = not read_only and isinstance(driver, InlineConnection)
        if direct and not observed(conn.engine) and driver.begin_immediate():
            return
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


async def checkpoint_forever(read_engine: AsyncEngine, interval: float = 1.0) -> None:
    """Checkpoint the SQLite WAL in the background, from a reader's thread: the writer runs
    on the event loop and must not spend it copying pages into the database file."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with read_engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("WAL checkpoint failed; retrying")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run ``hook`` once the session's transaction has committed (e.g. enqueue jobs)."""
    session.info.setdefault("after_commit", []).append(hook)


async def commit(session: AsyncSession) -> None:
    """Commit, then run the hooks registered with :func:`after_commit`. A failing hook is
    logged, not raised: the data is committed, and an error answer would make clients send
    it again (a failed enqueue is made good by the sweeper from the outbox)."""
    hooks: list[AfterCommit] = session.info.pop("after_commit", [])
    await session.commit()
    for hook in hooks:
        try:
            await hook()
        except Exception:
            log.exception("after-commit hook failed; the sweeper will make up for it")


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    assert bind is not None, "sessions are always bound to the platform engine"
    return bind.dialect.name


# Transaction-scoped advisory locks, in the two-key form (namespace, key): each namespace
# (0x1CC0002 experiment samples, 0x1CC0003 erasure buckets, 0x1CC0004-5 frequency caps,
# 0x1CC0006 reply senders) apart from the others and from single-key locks such as the
# migrations' one.
_HOLD_LOCKS = "SELECT {}(:namespace, k) FROM unnest(CAST(:keys AS int[])) AS k"
_HOLD_EXCLUSIVE = text(_HOLD_LOCKS.format("pg_advisory_xact_lock"))
_HOLD_SHARED = text(_HOLD_LOCKS.format("pg_advisory_xact_lock_shared"))


def lock_key(name: str) -> int:
    """A name's advisory lock key: its crc32 as an int4 (two names sharing one only wait
    for each other)."""
    return zlib.crc32(name.encode()) - 2**31


def lock_bucket(name: str, buckets: int) -> int:
    """A name's bucket of ``buckets``, for locks on many names at once."""
    return zlib.crc32(name.encode()) % buckets


async def hold_locks(
    session: AsyncSession, namespace: int, keys: Collection[int], *, shared: bool = False
) -> None:
    """PostgreSQL: hold the keys' advisory locks until the transaction ends, in one
    statement, in key order (holders of several never wait for each other in a cycle)."""
    if keys:
        params = {"namespace": namespace, "keys": sorted(set(keys))}
        await session.execute(_HOLD_SHARED if shared else _HOLD_EXCLUSIVE, params)


Processor = Callable[[Any], Any] | None


@functools.cache
def column_processor(dialect: Dialect, table: Any, column: str) -> Processor:
    """The column's bind processor for the dialect, made once (None: values go as they are):
    for the statements that bind whole columns themselves (bulk_pg's COPY, pipeline_pg's
    arrays, sqlite_rows' tuples), so that they store what Core would."""
    process: Processor = table.c[column].type.dialect_impl(dialect).bind_processor(dialect)
    return process


def bound_column(process: Processor, values: list[Any]) -> list[Any]:
    """``values`` through ``process``; once when they are all the very same object (a
    group's ``now``; identity, not equality: 1 == True)."""
    if process is None or not values:
        return values
    first = values[0]
    if all(value is first for value in values):
        return [process(first)] * len(values)
    return list(map(process, values))


def scalar_defaults(table: Any, given: Collection[str]) -> dict[str, Any]:
    """The Python-side defaults Core's executemany would fill in for the columns not given;
    a default it would have to call is refused (the caller cannot serve it)."""
    defaults: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.key in given or default is None:
            continue
        if not default.is_scalar:
            raise ValueError(f"{table.name}.{column.key}: a default that is not a value")
        defaults[column.key] = default.arg
    return defaults


def one_of(session: AsyncSession, column: Any, values: Collection[str]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``= ANY`` of one array parameter: an IN list is a
    parameter per value, which SQLAlchemy processes at every call (a batch's lookups of 500
    customers spent more time there than in the database)."""
    if dialect_name(session) == "postgresql":
        condition: ColumnElement[bool] = column == any_(
            bindparam(None, list(values), type_=ARRAY(String))
        )
        return condition
    within: ColumnElement[bool] = column.in_(values)
    return within


def insert_ignoring_conflicts(
    session: AsyncSession | str, table: Any, *conflict_columns: str
) -> Any:
    """``INSERT ... ON CONFLICT (cols) DO NOTHING`` for SQLite and PostgreSQL alike, for the
    session's database or one named by its dialect."""
    dialect = session if isinstance(session, str) else dialect_name(session)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))


# SQLSTATE classes of errors that may not happen again: transaction rollback (deadlock,
# serialization), connection exceptions, operator intervention (shutdown, cancel), lock not
# available, insufficient resources, and a read-only transaction (a failover in progress).
_PASSING_SQLSTATES = ("40", "08", "57", "53", "55P03", "25006")


# character_not_in_repertoire (a NUL byte in text) and untranslatable_character (\u0000 in
# JSONB): PostgreSQL refusing a value SQLite would store
_REFUSED_TEXT_SQLSTATES = {"22021", "22P05"}


def refused_text(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a character of a value (app.nul_guard keeps
    NUL out of requests; this is for any that gets past it)."""
    return _sqlstate(exc) in _REFUSED_TEXT_SQLSTATES


def too_long(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a value longer than its column (SQLite stores
    it): inputs are checked against the columns; this is for any that gets past them."""
    return _sqlstate(exc) == "22001"  # string_data_right_truncation


def _sqlstate(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError):
        exc = exc.orig if exc.orig is not None else exc
    return str(getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None))


def passing_db_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a database failure that retrying may get past. The worker's
    PostgreSQL statements run on the asyncpg connection itself, so its own errors come
    through unwrapped as well as SQLAlchemy's; errors of the statement itself (a constraint,
    bad SQL or data) are not passing."""
    if isinstance(exc, IntegrityError | ProgrammingError | DataError):
        return False
    if isinstance(exc, DBAPIError):
        # PostgreSQL's errors through SQLAlchemy are mostly plain DBAPIErrors: their
        # SQLSTATE tells (22012, division by zero, is not passing); SQLite's carry none
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return not code or str(code).startswith(_PASSING_SQLSTATES)
    if isinstance(exc, OSError | asyncio.TimeoutError | SQLAlchemyTimeoutError):
        return True  # SQLAlchemyTimeoutError: no pooled connection came free in time
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", "") or "")
        return code.startswith(_PASSING_SQLSTATES)
    return isinstance(exc, asyncpg.InterfaceError)  # e.g. the connection closed under it
