"""The SQLite writer runs inline on the event loop: it must wait for a write lock held
elsewhere without blocking the loop, and give up after its time limit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app import sqlite_inline
from app.db import create_engine, create_sessionmaker
from app.sqlite_inline import run_sql


async def _ticker(ticks: list[int]) -> None:
    while True:
        ticks.append(1)
        await asyncio.sleep(0.01)


async def _insert(url: str, value: int) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"INSERT INTO t VALUES ({value})")
    finally:
        await engine.dispose()


@pytest.fixture
def database(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "inline.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
    return f"sqlite+aiosqlite:///{path}", path


async def test_a_locked_database_is_waited_for_while_the_loop_runs(
    database: tuple[str, Path],
) -> None:
    url, path = database
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    ticks: list[int] = []
    ticker = asyncio.create_task(_ticker(ticks))
    write = asyncio.create_task(_insert(url, 1))
    await asyncio.sleep(0.3)
    assert not write.done()
    assert len(ticks) >= 10  # the loop kept running meanwhile
    blocker.execute("COMMIT")
    await asyncio.wait_for(write, timeout=5)
    ticker.cancel()
    assert blocker.execute("SELECT x FROM t").fetchall() == [(1,)]
    blocker.close()


async def test_the_wait_for_a_lock_is_bounded(
    database: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, path = database
    monkeypatch.setattr(sqlite_inline, "BUSY_TIMEOUT", 0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(OperationalError, match="locked"):
        await asyncio.wait_for(_insert(url, 2), timeout=5)
    blocker.execute("ROLLBACK")
    await _insert(url, 3)  # the connection is usable again
    assert blocker.execute("SELECT x FROM t").fetchall() == [(3,)]
    blocker.close()


# run_sql: driver SQL straight on the writer's sqlite3 connection, inside the session's
# transaction, with SQLAlchemy's errors; through exec_driver_sql wherever it cannot.


@pytest.fixture
async def writer(database: tuple[str, Path]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database[0])
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE UNIQUE INDEX ux_t ON t (x)")
    yield engine
    await engine.dispose()


def _listening(engine: AsyncEngine) -> contextlib.AbstractContextManager[list[str]]:
    """Capture the engine's statements (which makes run_sql take exec_driver_sql)."""

    @contextlib.contextmanager
    def listening() -> Iterator[list[str]]:
        seen: list[str] = []

        def capture(*args: object) -> None:
            seen.append(str(args[2]))

        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        try:
            yield seen
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", capture)

    return listening()


async def _ran(engine: AsyncEngine) -> list[object]:
    """The same statements' answers: an executemany's count, RETURNING rows, a select."""
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        many = await run_sql(session, "INSERT INTO t VALUES (?)", [(1,), (2,), (3,)], many=True)
        returned = await run_sql(session, "UPDATE t SET x = x * 10 WHERE x > ? RETURNING x", (1,))
        selected = await run_sql(session, "SELECT x FROM t ORDER BY x")
        await session.rollback()
    return [many.rowcount, sorted(returned.rows), returned.rowcount, selected.rows]


async def test_run_sql_answers_as_exec_driver_sql_does(writer: AsyncEngine) -> None:
    direct = await _ran(writer)
    with _listening(writer) as seen:
        through_sqlalchemy = await _ran(writer)
    assert len([s for s in seen if s.startswith(("INSERT", "UPDATE", "SELECT"))]) == 3
    assert direct == through_sqlalchemy == [3, [(20,), (30,)], 2, [(1,), (20,), (30,)]]


async def test_run_sql_goes_direct_only_on_the_inline_writer(
    writer: AsyncEngine, database: tuple[str, Path]
) -> None:
    async with create_sessionmaker(writer)() as session:
        assert isinstance(await sqlite_inline._inline_writer(session), sqlite3.Connection)
        with _listening(writer):
            assert await sqlite_inline._inline_writer(session) is None
    reader = create_engine(database[0], read_only=True)  # aiosqlite's threads
    try:
        async with create_sessionmaker(reader)() as session:
            assert await sqlite_inline._inline_writer(session) is None
            assert (await run_sql(session, "SELECT count(*) FROM t")).rows == [(0,)]
    finally:
        await reader.dispose()


async def test_run_sql_writes_in_the_sessions_transaction_of_the_moment(
    writer: AsyncEngine, database: tuple[str, Path]
) -> None:
    async with create_sessionmaker(writer)() as session:
        await run_sql(session, "INSERT INTO t VALUES (1)")
        await session.commit()
        # a new transaction: begun for this statement, undone by the rollback (on a
        # connection left outside a transaction, the insert would commit by itself)
        await run_sql(session, "INSERT INTO t VALUES (2)")
        await session.rollback()
        await run_sql(session, "INSERT INTO t VALUES (3)")
        await session.commit()
    with sqlite3.connect(database[1]) as check:
        assert check.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,)]


@pytest.mark.parametrize("listened", [False, True], ids=["direct", "exec_driver_sql"])
async def test_run_sql_raises_sqlalchemys_errors(writer: AsyncEngine, listened: bool) -> None:
    context = _listening(writer) if listened else contextlib.nullcontext()
    with context:
        async with create_sessionmaker(writer)() as session:
            await run_sql(session, "INSERT INTO t VALUES (1)")
            with pytest.raises(IntegrityError) as raised:
                await run_sql(session, "INSERT INTO t VALUES (?)", [(2,), (1,)], many=True)
            assert isinstance(raised.value.orig, sqlite3.IntegrityError)
            with pytest.raises(OperationalError):
                await run_sql(session, "SELECT nothing FROM t")


async def test_run_sql_writes_in_savepoints_roll_back_with_them(
    writer: AsyncEngine, database: tuple[str, Path]
) -> None:
    async with create_sessionmaker(writer)() as session:
        await run_sql(session, "INSERT INTO t VALUES (1)")
        with contextlib.suppress(LookupError):
            async with session.begin_nested():
                await run_sql(session, "INSERT INTO t VALUES (2)")
                raise LookupError("undo the savepoint")
        async with session.begin_nested():
            await run_sql(session, "INSERT INTO t VALUES (3)")
        await run_sql(session, "INSERT INTO t VALUES (4)")
        await session.commit()
    with sqlite3.connect(database[1]) as check:
        assert check.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,), (4,)]


class _Base(DeclarativeBase):
    pass


class _Item(_Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.mark.parametrize("listened", [False, True], ids=["direct", "exec_driver_sql"])
async def test_run_sql_after_a_failed_flush_is_refused_as_sqlalchemy_refuses_it(
    writer: AsyncEngine, database: tuple[str, Path], listened: bool
) -> None:
    """A failed flush rolls the transaction back but leaves it the session's current one,
    inactive: a statement then must not run on the connection (outside any transaction, it
    would commit by itself)."""
    async with writer.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    context = _listening(writer) if listened else contextlib.nullcontext()
    with context:
        async with create_sessionmaker(writer)() as session:
            session.add(_Item(id=1))
            await session.commit()
            await run_sql(session, "INSERT INTO t VALUES (1)")
            session.add(_Item(id=1))
            with pytest.raises(IntegrityError):
                await session.flush()
            with pytest.raises(PendingRollbackError):
                await run_sql(session, "INSERT INTO t VALUES (2)")
            await session.rollback()
    with sqlite3.connect(database[1]) as check:
        assert check.execute("SELECT x FROM t").fetchall() == []


async def test_a_begin_sqlite_refuses_comes_out_as_sqlalchemys_error(
    writer: AsyncEngine,
) -> None:
    """Not a busy lock (here an authorizer denies it, as an I/O error or a full disk would):
    the direct BEGIN IMMEDIATE hands over to SQLAlchemy's way, which raises its own error
    (DBAPIError: what passing_db_error tells retries by)."""

    def deny_transactions(action: int, *_: object) -> int:
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_TRANSACTION else sqlite3.SQLITE_OK

    async with create_sessionmaker(writer)() as session:
        await run_sql(session, "SELECT 1")
        raw = await sqlite_inline._inline_writer(session)
        assert raw is not None
        await session.rollback()
        raw.set_authorizer(deny_transactions)
        with pytest.raises(DBAPIError, match="not authorized"):
            await run_sql(session, "SELECT 1")
        raw.set_authorizer(None)
