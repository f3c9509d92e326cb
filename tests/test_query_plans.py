"""The worker's and the sweeper's statements on SQLite cost what they find, whatever the
backlog: they go through the index that leads to their rows, never through every waiting
message.

SQLite's planner has no statistics: offered an equality on the indexed status column beside
an id list, it walks the status index, i.e. every queued message, and each claim grows
with the backlog."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from app.callbacks import repository as callbacks_repository
from app.messages import delivery, repository
from app.messages.schemas import MessageCreate
from app.messages.service import AcceptRequest
from app.messages.tasks import sweep_once
from app.runtime import Runtime
from app.strategies import repository as strategies_repository
from app.timeutil import utcnow
from tests.conftest import VARIABLES


def plan(db: Path, statement: str, parameters: Any) -> str:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


async def accept(runtime: Runtime, count: int) -> list[str]:
    ids = []
    for i in range(count):
        body = MessageCreate.model_validate(
            {
                "scenario": "account_movement",
                "customer_id": f"C{i}",
                "variables": VARIABLES,
                "recipient": {"phone": f"1380000{i:04d}"},
            }
        )
        accepted = await runtime.accept(AcceptRequest("account_movement", "core", body, None))
        ids.append(accepted.message.id)
    return ids


async def test_claims_and_outcomes_look_messages_up_by_id(
    idle_runtime: Runtime, tmp_path: Path
) -> None:
    runtime = idle_runtime
    ids = await accept(runtime, 3)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if ("messages" in statement or "outbox" in statement) and " IN (" in statement:
            seen.append((statement, parameters))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await delivery.process_many(runtime, ids)
        await runtime.close()  # the outcomes are written by then
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", capture)

    # (app/messages/pipeline_sqlite.py's statements)
    claims = [s for s in seen if s[0].startswith("UPDATE messages") and "RETURNING" in s[0]]
    fences = [s for s in seen if s[0].startswith("SELECT id, attempts FROM messages")]
    assert claims, [s[0][:60] for s in seen]
    assert fences, [s[0][:60] for s in seen]
    for statement, parameters in claims + fences:
        shown = plan(tmp_path / "icc.db", statement, parameters)
        assert "ix_messages_status" not in shown, shown
        assert "sqlite_autoindex_messages_1 (id=?)" in shown, shown
    # the finished messages' outbox rows, by the primary key
    finished = [s for s in seen if s[0].startswith("DELETE FROM outbox")]
    assert finished, [s[0][:60] for s in seen]
    for statement, parameters in finished:
        shown = plan(tmp_path / "icc.db", statement, parameters)
        assert "sqlite_autoindex_outbox_1 (message_id=?)" in shown, shown


async def test_sweeps_go_through_indexes(idle_runtime: Runtime, tmp_path: Path) -> None:
    runtime = idle_runtime
    await accept(runtime, 3)  # queued: nobody consumes this runtime's queue
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.startswith("SELECT outbox.message_id"):
            seen.append((statement, parameters))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", capture)
    try:
        assert await runtime.queue.backlog() == 3
        await sweep_once(runtime)  # with jobs waiting: the three kinds' statements
        while await runtime.queue.backlog():
            runtime.queue._queue.get_nowait()  # type: ignore[attr-defined]
        await sweep_once(runtime)  # and with none
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", capture)
    assert len(seen) == 6, [s[0][-80:] for s in seen]  # three kinds per sweep
    for statement, parameters in seen:
        shown = plan(tmp_path / "icc.db", statement, parameters)
        assert "SCAN" not in shown, shown
        assert "USING INDEX ix_outbox_enqueued_due" in shown or (
            "USING INDEX ix_messages_status_id (status=?)" in shown
        ), shown


async def test_the_list_since_and_receipts_by_provider_id_use_indexes(
    idle_runtime: Runtime, tmp_path: Path
) -> None:
    """``since`` is a range of the primary key (created_at has no index), and a receipt
    naming the provider's id finds the message through the partial index of sent ones."""
    runtime = idle_runtime
    await accept(runtime, 3)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.startswith("SELECT messages."):
            seen.append((statement, parameters))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with runtime.sessionmaker() as session:
            await repository.list_page(
                session,
                owner=None,
                customer_id=None,
                scenario=None,
                status=None,
                since=utcnow() - timedelta(minutes=5),
                before_id=None,
                limit=50,
            )
            await callbacks_repository.messages_for_receipts(
                session, provider="aliyun-main", message_ids=[], provider_ids=["biz-1"]
            )
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", capture)
    assert len(seen) == 2, [s[0][:60] for s in seen]
    listed, receipts = (plan(tmp_path / "icc.db", *s) for s in seen)
    assert "sqlite_autoindex_messages_1 (id>?)" in listed, listed
    assert "ix_messages_sent_provider_id (provider_message_id=?)" in receipts, receipts


async def test_frequency_caps_seek_patched_messages_by_when_they_reach_the_customer(
    idle_runtime: Runtime, tmp_path: Path
) -> None:
    """Both lookups of a customer's patches (a seek each side of the decision time, and a
    batch's scan) go through the partial index on coalesce(send_at, created_at)."""
    runtime = idle_runtime
    await accept(runtime, 1)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "coalesce(messages.send_at, messages.created_at)" in statement:
            seen.append((statement, parameters))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with runtime.sessionmaker() as session:
            many = [f"C{i}" for i in range(strategies_repository.SEEK_CUSTOMERS + 1)]
            for customers in (["C0"], many):
                await strategies_repository.recent_patches(
                    session, customers, at=utcnow(), span=timedelta(days=7), most=2
                )
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", capture)
    assert len(seen) == 2, [s[0][:60] for s in seen]
    for statement, parameters in seen:
        shown = plan(tmp_path / "icc.db", statement, parameters)
        assert "SCAN messages" not in shown, shown
        assert "USING INDEX ix_messages_patched_reach (customer_id=? AND <expr>" in shown, shown


async def test_consent_and_opt_out_lookups_go_through_indexes(
    idle_runtime: Runtime, tmp_path: Path
) -> None:
    """A group's consent decisions by the primary key, opt-out replies by sender key, one
    search per id of the JSON parameter."""
    from app.callbacks.repository import _OPT_OUTS_SQLITE
    from app.customers.repository import _CONSENTS_SQLITE

    ids = ('["C1", "C2"]',)
    consents = plan(tmp_path / "icc.db", _CONSENTS_SQLITE, ids)
    opt_outs = plan(tmp_path / "icc.db", _OPT_OUTS_SQLITE, ids)
    assert "SEARCH customer_consents USING INDEX sqlite_autoindex" in consents, consents
    assert "(customer_id=?)" in consents, consents
    assert "LIST SUBQUERY" in consents, consents
    assert "USING INDEX ix_inbound_messages_sender_key (sender_key=?)" in opt_outs, opt_outs
    assert "LIST SUBQUERY" in opt_outs, opt_outs
