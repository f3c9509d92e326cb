"""The worker's statements find their messages by primary key on SQLite, whatever the backlog.

SQLite's planner has no statistics: offered an equality on the indexed status column beside
an id list, it walks ix_messages_status, i.e. every queued message, and each claim grows
with the backlog."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from app.auth.schemas import Role
from app.auth.service import Principal
from app.messages import delivery
from app.messages.schemas import MessageCreate
from app.messages.service import AcceptRequest
from app.runtime import Runtime
from app.scenarios import service as scenarios
from app.scenarios.schemas import ScenarioCreate
from tests.conftest import SCENARIO, VARIABLES, make_settings

SYSTEM = Principal(key_id="k", name="core", owner="core", role=Role.system)


@pytest.fixture
async def runtime(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Runtime]:
    db = tmp_path / "icc.db"
    db.write_bytes(sqlite_template.read_bytes())
    runtime = Runtime(make_settings(f"sqlite:///{db}", None), run_workers=False)
    await runtime.start()
    scenarios.clear_cache()
    async with runtime.sessionmaker() as session:
        await scenarios.create(session, ScenarioCreate.model_validate(SCENARIO))
        await session.commit()
    yield runtime
    await runtime.close()
    scenarios.clear_cache()


def plan(db: Path, statement: str, parameters: Any) -> str:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


async def test_claims_and_outcomes_look_messages_up_by_id(runtime: Runtime, tmp_path: Path) -> None:
    ids = []
    for i in range(3):
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

    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "messages" in statement and " IN (" in statement:
            seen.append((statement, parameters))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await delivery.process_many(runtime, ids)
        await runtime.close()  # the outcomes are written by then
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", capture)

    claims = [s for s in seen if s[0].startswith("UPDATE messages SET status")]
    fences = [s for s in seen if s[0].startswith("SELECT messages.id, messages.attempts")]
    assert claims, [s[0][:60] for s in seen]
    assert fences, [s[0][:60] for s in seen]
    for statement, parameters in claims + fences:
        shown = plan(tmp_path / "icc.db", statement, parameters)
        assert "ix_messages_status" not in shown, shown
        assert "sqlite_autoindex_messages_1 (id=?)" in shown, shown
