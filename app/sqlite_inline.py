"""The SQLite writer's connection, run inline on the event loop's thread.

aiosqlite runs every call (execute, fetch, close, commit...) in a thread of its own and
hands the result back through the event loop. Profiles of `icc serve` showed those hops, and
the GIL handovers they cause, costing more of the main thread than the SQL itself: a group
of a dozen messages makes some 60 of them. The writer's statements are short (bulk writes of
one group, by primary key or index) and serialized anyway (SQLite has one writer), so this
module runs them directly, behind the same coroutine interface SQLAlchemy's aiosqlite
dialect drives. Readers keep aiosqlite's threads: a long report must not stall the loop.

Busy waiting would stall the loop, so the connection has no busy timeout: when another
connection holds the write lock, taking it (``BEGIN IMMEDIATE``, or any statement outside a
transaction) is retried with asynchronous sleeps, for up to ``BUSY_TIMEOUT`` seconds.

The hot paths' driver SQL (``run_sql``) goes straight to the sqlite3 connection once the
session's transaction holds it: SQLAlchemy's ``exec_driver_sql`` costs some 33 us a
statement (a greenlet hop, an execution context, a cursor result) where SQLite takes 1-30 us
for these, and a group of single sends runs about ten of them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

BUSY_TIMEOUT = 30.0


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, 517) or (
        "database is locked" in str(exc)
    )


class InlineCursor:
    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        self._cursor = connection._conn.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        args = (sql,) if parameters is None else (sql, parameters)
        await self._connection.run(self._cursor.execute, *args)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        await self._connection.run(self._cursor.executemany, sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _RunNow:
    """Stands in for aiosqlite's request queue, which the dialect uses directly to set the
    isolation level: the function runs at once and its future is resolved."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` that SQLAlchemy's aiosqlite dialect uses."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._tx = _RunNow()

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function``; while the write lock is taken elsewhere and we hold no
        transaction (so retrying is safe), wait for it without blocking the loop."""
        delay, waited = 0.001, 0.0
        while True:
            in_transaction = self._conn.in_transaction
            try:
                return function(*args)
            except sqlite3.OperationalError as exc:
                if in_transaction or not _is_busy(exc) or waited >= BUSY_TIMEOUT:
                    raise
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection (run_sql runs on it inside a transaction)."""
        return self._conn

    def begin_immediate(self) -> bool:
        """``BEGIN IMMEDIATE`` at once; False (nothing done) when it fails, above all when
        another connection holds the write lock: then the caller takes the waiting way
        (``run``, through SQLAlchemy, which also wraps any other error as its own)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:  # busy, or a failure the waiting way raises as SQLAlchemy's
            return False
        return True

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    async def create_function(self, name: str, num_params: int, func: Any, **kw: Any) -> None:
        self._conn.create_function(name, num_params, func, **kw)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value  # type: ignore[assignment]


def inline_creator(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine``, connecting as the dialect would
    (its ``create_connect_args``), without a busy timeout (see the module docstring)."""

    async def connect() -> InlineConnection:
        conn = sqlite3.connect(*args, **{**kwargs, "timeout": 0, "check_same_thread": False})
        return InlineConnection(conn)

    return connect


class Ran(NamedTuple):
    """What ``run_sql`` gives back: the rows (none for a statement without any) and the
    driver's row count."""

    rows: list[Any]
    rowcount: int


_WRITER = "icc_inline_writer"  # session.info: (the transaction, its sqlite3 connection, engine)


async def run_sql(session: AsyncSession, sql: str, params: Any = (), *, many: bool = False) -> Ran:
    """Run driver SQL in the session's transaction (``many``: executemany of ``params``):
    directly on the sqlite3 connection of the inline writer, or, on any other connection
    (PostgreSQL, an aiosqlite reader) or while something listens to the engine's statements
    (tests that capture them), through ``exec_driver_sql``. SQLite's errors are raised as
    SQLAlchemy raises them (IntegrityError...)."""
    raw = await _inline_writer(session)
    if raw is None:
        connection = await session.connection()
        result = await connection.exec_driver_sql(sql, params)
        return Ran(list(result) if result.returns_rows else [], result.rowcount)
    try:
        cursor = raw.executemany(sql, params) if many else raw.execute(sql, params)
        return Ran(cursor.fetchall(), cursor.rowcount)
    except sqlite3.Error as exc:
        error = DBAPIError.instance(sql, params, exc, sqlite3.Error, ismulti=many)
        raise error from exc


async def _inline_writer(session: AsyncSession) -> sqlite3.Connection | None:
    """The sqlite3 connection of the session's current transaction (or savepoint) if it is
    the inline writer's and no one listens to the engine's statements; None otherwise.
    Known once per transaction: looking it up through the session costs a third of a
    statement."""
    sync = session.sync_session
    known = session.info.get(_WRITER)
    # the innermost transaction: a savepoint's SAVEPOINT is only sent when the session is
    # next asked for its connection
    if known is None or known[0] is not (sync.get_nested_transaction() or sync.get_transaction()):
        connection = (await session.connection()).sync_connection
        assert connection is not None  # a session's connection is started
        driver = connection.connection.driver_connection
        sqlite = driver.sqlite if isinstance(driver, InlineConnection) else None
        current = sync.get_nested_transaction() or sync.get_transaction()
        known = session.info[_WRITER] = (current, sqlite, connection.engine)
    transaction, writer = known[0], known[1]
    # not after a failed flush (the same transaction, no longer active, rolled back) nor a
    # commit under the session: SQLAlchemy's way refuses the statement as it should
    if writer is None or transaction is None or not transaction.is_active:
        return None
    if not writer.in_transaction:
        return None
    return None if observed(known[2]) else writer


def observed(engine: Engine) -> bool:
    """Whether something listens to the engine's statements (which the direct way would
    not show it)."""
    dispatch = engine.dispatch
    return bool(dispatch.before_cursor_execute) or bool(dispatch.after_cursor_execute)
