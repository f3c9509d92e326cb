"""app/sqlite_rows.py stores exactly what Core's insert and update store: the same rows are
written both ways into two copies of the migrated schema and compared as SQLite holds them
(text, numbers, NULLs), defaults of left-out columns included."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Table, bindparam, insert, null, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import sqlite_rows
from app.db import create_engine, create_sessionmaker, insert_ignoring_conflicts
from app.messages.repository import EVENTS, MESSAGES, OUTBOX, insert_messages
from app.sandbox.repository import SANDBOX, record_sent

SHANGHAI = timezone(timedelta(hours=8))
NOW = datetime(2026, 12, 7, 5, 21, 3, 331954, tzinfo=UTC)


def _message(n: int, **extra: Any) -> dict[str, Any]:
    """A message row as accepting makes it (service._Plan.messages): several columns are
    left to their defaults."""
    return {
        "id": f"msg_{n:04d}",
        "owner": "cards",
        "idempotency_key": None if n % 2 else f"key-{n}",
        "request_hash": "ab" * 32,
        "scenario": "account_movement",
        "customer_id": f"C{n:04d}",
        "recipient": {"phone": "13800001234", "name": "张三"},
        "variables": {"amount": "1200.00", "direction": "支出", "nested": [1, None, 2.5]},
        "channels": ["wechat", "sms"],
        "channel": None,
        "status": "queued",
        "content": {"sms": {"body": "【示例银行】您尾号1234的账户支出1200.00元。"}},
        "decision": {"patch": None, "reason": "opted out"},
        "send_at": datetime(2026, 12, 8, 9, 0, tzinfo=SHANGHAI) if n % 3 == 0 else None,
        "created_at": NOW,
        "updated_at": NOW,
        **extra,
    }


async def _write_both(
    tmp_path: Path, template: Path, write: Any
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[Any]]:
    """Run ``write(session, core)`` on two copies, Core then sqlite_rows; return the tables
    written as SQLite holds them, and what each write answered."""
    answers: list[Any] = []
    for name, core in (("core", True), ("rows", False)):
        path = tmp_path / f"{name}.db"
        shutil.copy(template, path)
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            async with create_sessionmaker(engine)() as session:
                answers.append(await write(session, core))
                await session.commit()
        finally:
            await engine.dispose()
    return _dump(tmp_path / "core.db"), _dump(tmp_path / "rows.db"), answers


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _dump(path: Path) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        for table in ("messages", "message_events", "outbox", "sandbox_deliveries"):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1"):
                rows.append((table, *zip(row.keys(), tuple(row), strict=True)))
    return rows


def _messages_ignoring_taken_keys(rows: list[dict[str, Any]], *, checked: bool = False) -> Any:
    """A ``write`` for _write_both: the rows into messages, skipping taken keys."""

    async def write(session: AsyncSession, core: bool) -> Any:
        if core:
            stmt = insert_ignoring_conflicts(session, MESSAGES, "owner", "idempotency_key")
            return _rowcount(await session.execute(stmt, rows))
        assert not checked or sqlite_rows.applies(session, rows)
        return await sqlite_rows.insert(
            session, MESSAGES, rows, ignoring=("owner", "idempotency_key")
        )

    return write


async def test_messages_inserted_as_core_inserts_them(
    tmp_path: Path, sqlite_template: Path
) -> None:
    rows = [_message(n) for n in range(7)]
    rows[4]["cost"] = Decimal("0.045")  # not a left-out column in every group
    for row in rows:
        row.setdefault("cost", None)

    write = _messages_ignoring_taken_keys(rows, checked=True)
    core, mine, answers = await _write_both(tmp_path, sqlite_template, write)
    assert mine == core
    assert len(core) == 7
    assert answers == [7, 7]
    stored = dict(core[0][1:])
    assert "张三" in stored["recipient"]
    assert stored["attempts"] == 0  # a default, not NULL
    assert stored["unpatched"] is None
    assert stored["decision"] == '{"patch":null,"reason":"opted out"}'
    assert dict(core[3][1:])["send_at"] == "2026-12-08 01:00:00.000000"  # UTC


async def test_a_taken_key_is_skipped_and_counted_out(
    tmp_path: Path, sqlite_template: Path
) -> None:
    rows = [_message(0), _message(2), _message(4, idempotency_key="key-0")]

    write = _messages_ignoring_taken_keys(rows)
    core, mine, answers = await _write_both(tmp_path, sqlite_template, write)
    assert mine == core
    assert len(core) == 2
    assert answers == [2, 2]


@pytest.mark.parametrize("count", [1, 5])  # one row goes as execute, more as executemany
async def test_events_outbox_and_sandbox_rows(
    tmp_path: Path, sqlite_template: Path, count: int
) -> None:
    events = [
        {"message_id": f"msg_{n}", "type": "sent", "at": NOW, "detail": {"channel": "短信"}}
        for n in range(count)
    ]
    outbox = [
        {"message_id": f"msg_{n}", "due_at": NOW + timedelta(seconds=n), "enqueued_at": None}
        for n in range(count)
    ]
    sandbox = [
        {
            "id": f"sbx_{n}",
            "created_at": NOW,
            "provider": "sandbox",
            "channel": "sms",
            "idempotency_key": f"msg_{n}:sms",
            "message_id": f"msg_{n}",
            "to": "13800001234",
            "content": {"body": "您好"},
        }
        for n in range(count)
    ]
    tables: Sequence[tuple[Table, list[dict[str, Any]]]] = (
        (EVENTS, events),
        (OUTBOX, outbox),
        (SANDBOX, sandbox),
    )

    async def write(session: AsyncSession, core: bool) -> Any:
        for table, rows in tables:
            if core:
                await session.execute(insert(table), rows)
            else:
                assert await sqlite_rows.insert(session, table, rows) == count

    core, mine, _ = await _write_both(tmp_path, sqlite_template, write)
    assert mine == core
    assert len(core) == 3 * count


async def test_updates_by_key_as_core_updates(tmp_path: Path, sqlite_template: Path) -> None:
    messages = [_message(n, cost=None) for n in range(4)]
    shapes = [
        {
            "status": "sent",
            "provider": "sandbox-sms",
            "provider_message_id": "pm-1",
            "cost": Decimal("0.045000"),
            "sent_at": NOW.astimezone(SHANGHAI),
            "updated_at": NOW,
            "lease_until": None,
        },
        {"status": "failed", "status_reason": "号码无效", "channel_index": 1, "updated_at": NOW},
    ]
    changes = [(f"msg_{n:04d}", shapes[n % 2]) for n in range(4)]

    async def write(session: AsyncSession, core: bool) -> Any:
        await session.execute(insert(MESSAGES), messages)
        changed = 0
        for shape in shapes:
            rows = [c | {"b_id": i} for i, c in changes if c is shape]
            if core:
                stmt = update(MESSAGES).where(MESSAGES.c.id == bindparam("b_id"))
                changed += _rowcount(await session.execute(stmt, rows))
            else:
                keyed = [
                    {**{k: v for k, v in r.items() if k != "b_id"}, "id": r["b_id"]} for r in rows
                ]
                changed += await sqlite_rows.update_by_key(session, MESSAGES, "id", keyed)
        return changed

    core, mine, answers = await _write_both(tmp_path, sqlite_template, write)
    assert mine == core
    assert answers == [4, 4]
    failed = dict(core[1][1:])
    assert failed["status_reason"] == "号码无效"
    assert failed["channel_index"] == 1
    sent = dict(core[0][1:])
    assert sent["cost"] == "0.045000"
    assert sent["sent_at"] == "2026-12-07 05:21:03.331954"


async def test_rows_of_different_keys_are_not_taken(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'any.db'}")
    try:
        async with create_sessionmaker(engine)() as session:
            same = [{"a": 1}, {"a": 2}]
            assert sqlite_rows.applies(session, same)
            assert not sqlite_rows.applies(session, [{"a": 1}, {"b": 2}])
            assert not sqlite_rows.applies(session, [])
    finally:
        await engine.dispose()


async def test_json_nulls_money_and_other_keys_as_core(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """JSON's None ('null') and SQL NULL, Money from Decimal, int and float, and a key that
    names no column (Core ignores it)."""
    rows = [
        _message(0, recipient=None, unpatched=None, cost=Decimal("1.5"), note="x"),
        _message(1, recipient=JSON.NULL, unpatched={"a": None}, cost=2, note="y"),
        _message(2, recipient={}, unpatched=null(), cost=0.1, note="z"),
    ]

    async def write(session: AsyncSession, core: bool) -> Any:
        if core:
            return _rowcount(await session.execute(insert(MESSAGES), rows))
        return await sqlite_rows.insert(session, MESSAGES, rows)

    core, mine, answers = await _write_both(tmp_path, sqlite_template, write)
    assert mine == core
    assert answers == [3, 3]
    stored = [dict(row[1:]) for row in core]
    assert [s["recipient"] for s in stored] == ["null", "null", "{}"]
    assert [s["unpatched"] for s in stored] == [None, '{"a":null}', None]
    assert [s["cost"] for s in stored] == ["1.5", "2", "0.1"]


async def _both_ways(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch, calls: Any
) -> list[Any]:
    """What ``calls(session)`` answers with Core's statements, then with sqlite_rows."""
    answers = []
    for name, core in (("core", True), ("rows", False)):
        path = tmp_path / f"{name}-calls.db"
        shutil.copy(template, path)
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            if core:
                monkeypatch.setattr(sqlite_rows, "applies", lambda *_: False)
            async with create_sessionmaker(engine)() as session:
                answers.append(await calls(session))
                await session.commit()
        finally:
            monkeypatch.undo()
            await engine.dispose()
    return answers


async def test_insert_messages_answers_the_ids_it_inserted(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def calls(session: AsyncSession) -> Any:
        first = await insert_messages(session, [_message(0), _message(2)], expected=2)
        taken = [
            _message(10, idempotency_key="key-0"),  # taken by msg_0000
            _message(12, idempotency_key="k"),
            _message(14, idempotency_key="k"),  # taken in the same group
            _message(15),  # no key
        ]
        second = await insert_messages(session, taken, expected=4)
        third = await insert_messages(session, [_message(20, idempotency_key="k")], expected=1)
        return first, second, third

    core, mine = await _both_ways(tmp_path, sqlite_template, monkeypatch, calls)
    assert mine == core
    assert mine == ({"msg_0000", "msg_0002"}, {"msg_0012", "msg_0015"}, set())


def _delivery(key: str, delivery_id: str) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "provider": "sandbox",
        "channel": "sms",
        "idempotency_key": key,
        "message_id": key.split(":")[0],
        "to": "13800001234",
        "content": {"body": "您好", "n": delivery_id},
    }


async def test_sandbox_records_keep_the_send_each_message_names(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """record_sent writes each send with its own id; a key recorded before (by a send whose
    outcome was never written) is replaced by the send its message names."""

    async def calls(session: AsyncSession) -> Any:
        groups = [
            [("a:sms", "sbx_1"), ("b:sms", "sbx_2")],
            [("c:sms", "sbx_3"), ("b:sms", "sbx_4")],
        ]
        groups.append([("d:sms", "sbx_5")])
        for group in groups:
            await record_sent(session, [_delivery(k, i) for k, i in group])
        rows = await session.execute(
            select(SANDBOX.c.idempotency_key, SANDBOX.c.id, SANDBOX.c.content).order_by(
                SANDBOX.c.idempotency_key
            )
        )
        return [tuple(row) for row in rows]

    core, mine = await _both_ways(tmp_path, sqlite_template, monkeypatch, calls)
    assert mine == core
    assert [(key, i) for key, i, _ in mine] == [
        ("a:sms", "sbx_1"),
        ("b:sms", "sbx_4"),  # the later send of b replaced the earlier one
        ("c:sms", "sbx_3"),
        ("d:sms", "sbx_5"),
    ]
    assert mine[1][2] == {"body": "您好", "n": "sbx_4"}
