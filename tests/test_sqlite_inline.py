"""The SQLite writer runs inline on the event loop: it must wait for a write lock held
elsewhere without blocking the loop, and give up after its time limit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app import sqlite_inline
from app.db import create_engine


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
