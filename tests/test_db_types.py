"""UTCDateTime on SQLite: its one-step bind processor stores exactly the text that
SQLAlchemy's own chain (process_bind_param, then DATETIME's format) stores, and what is
stored reads back as the same instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.dialects.sqlite import DATETIME
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect

from app.db import UTCDateTime, create_engine

SHANGHAI = timezone(timedelta(hours=8))
VALUES = [
    datetime(2026, 12, 7, 5, 21, 3, 331954, tzinfo=UTC),
    datetime(2026, 12, 7, 5, 21, 3, tzinfo=UTC),  # no microseconds: still six digits
    datetime(2026, 12, 7, 13, 21, 3, 5, tzinfo=SHANGHAI),  # converted to UTC
    datetime(2027, 1, 1, 0, 30, tzinfo=SHANGHAI),  # the day and year change too
    datetime(2026, 3, 1, 9, 0, 0, 1),  # naive: taken as UTC
    datetime(999, 5, 6, 7, 8, 9, 10, tzinfo=UTC),  # a year below 1000 keeps four digits
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


def _reference(value: datetime) -> str:
    """What SQLAlchemy's chain makes of the value (the processor before this one)."""
    dialect = aiosqlite_dialect()
    naive = UTCDateTime().process_bind_param(value, dialect)
    processor = DATETIME().bind_processor(dialect)  # type: ignore[no-untyped-call]
    assert processor is not None
    text_value: str = processor(naive)
    return text_value


def test_the_sqlite_processor_writes_what_sqlalchemy_wrote() -> None:
    process = UTCDateTime().bind_processor(aiosqlite_dialect())
    assert process is not None
    for value in VALUES:
        assert process(value) == _reference(value), value
        assert process(value) == _reference(value), value  # the kept text of the last one
    assert process(None) is None


def test_the_kept_text_is_of_the_same_value_only() -> None:
    process = UTCDateTime().bind_processor(aiosqlite_dialect())
    assert process is not None
    first, second = VALUES[0], VALUES[0] + timedelta(microseconds=1)
    assert process(first) == "2026-12-07 05:21:03.331954"
    assert process(second) == "2026-12-07 05:21:03.331955"
    assert process(first) == "2026-12-07 05:21:03.331954"


def test_a_value_that_is_not_a_datetime_is_refused() -> None:
    process = UTCDateTime().bind_processor(aiosqlite_dialect())
    assert process is not None
    with pytest.raises(TypeError):
        process("2026-12-07 05:21:03")


async def test_stored_times_read_back_as_the_same_instants(tmp_path: Path) -> None:
    table = Table("t", MetaData(), Column("n", Integer), Column("at", UTCDateTime()))
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'types.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
            await conn.execute(insert(table), [{"n": i, "at": v} for i, v in enumerate(VALUES)])
            stored = (await conn.execute(text("SELECT at FROM t ORDER BY n"))).scalars().all()
            read = (await conn.execute(select(table.c.at).order_by(table.c.n))).scalars().all()
            # a comparison with a bound time uses the same text
            later = await conn.execute(select(table.c.n).where(table.c.at > VALUES[0]))
            after_first = sorted(later.scalars())
    finally:
        await engine.dispose()
    assert stored == [_reference(v) for v in VALUES]
    assert read == [v if v.tzinfo else v.replace(tzinfo=UTC) for v in VALUES]
    assert all(r.tzinfo is not None for r in read)
    assert after_first == [i for i, v in enumerate(VALUES) if _aware(v) > VALUES[0]]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
