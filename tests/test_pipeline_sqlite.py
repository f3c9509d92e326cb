"""The worker's SQLite statements (app/messages/pipeline_sqlite.py, and app/sqlite_rows.py
for the outcome writes) against Core's portable ones, on the same rows as
tests/test_pipeline_pg.py: two copies of them in one SQLite database, one claimed and
finished through Core (the reference: what the worker ran before), the other through the
fast path. The tables must end up the same, and so must what the calls return."""

from __future__ import annotations

import random
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app import sqlite_rows
from app.db import create_engine, create_sessionmaker, json_array
from app.messages import pipeline_sqlite, repository
from tests.test_pipeline_pg import (
    CLAIM_ROWS,
    CLAIMED,
    NOW,
    WORKER,
    Sessions,
    _apply,
    _claim,
    _held_rows,
    _insert,
    _message,
    _outcomes,
    _prefixes,
    _tables,
)


@pytest.fixture
async def sessions(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Sessions]:
    path = tmp_path / "pipeline.db"
    shutil.copy(sqlite_template, path)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A switch to Core's statements for the reference run."""

    async def held_by_core(session: AsyncSession, ids: list[str], *, worker: str) -> Any:
        rows = await session.execute(repository._HELD, {"ids": ids, "worker": worker})
        return {row.id: row.attempts for row in rows}

    class Switch:
        def on(self) -> None:
            monkeypatch.setattr(sqlite_rows, "applies", lambda *_: False)
            monkeypatch.setattr(pipeline_sqlite, "held_claims", held_by_core)

        def off(self) -> None:
            monkeypatch.undo()

    return Switch()


async def test_the_claim_takes_what_cores_claim_takes(sessions: Sessions, core: Any) -> None:
    old, new = _prefixes()
    patched = _message("due-patched", unpatched={"sms": {"body": "您好"}})
    rows = [{**r, "unpatched": None} for r in CLAIM_ROWS] + [patched]
    for prefix in (old, new):
        await _insert(sessions, prefix, rows, outbox=[])
    wanted = [r["id"] for r in rows if r["id"] != "not-asked"] + ["missing"]
    core.on()
    reference = await _claim(sessions, old, repository.claim_many, repository.add_events, wanted)
    core.off()
    claimed = await _claim(sessions, new, repository.claim_for_sending, None, wanted)

    assert {c.id for c in claimed} == CLAIMED | {"due-patched"}
    # Core's `unpatched IS NOT NULL` answers true for every row in SQLite's RETURNING
    assert [c.patched for c in reference] == [True] * len(reference)
    assert [replace(c, patched=True) for c in claimed] == reference
    assert {c.id for c in claimed if c.patched} == {"due-patched"}
    expired = next(c for c in claimed if c.id == "expired-lease")
    assert (expired.attempts, expired.channel_attempts, expired.channel_index) == (3, 3, 1)
    assert expired.content["sms"] == {"body": "您好"}
    tables = await _tables(sessions, new, events_by_message=True)
    assert tables == await _tables(sessions, old, events_by_message=True)
    assert len(tables["events"]) == len(CLAIMED) + 1


async def test_held_claims_are_read_as_core_reads_them(sessions: Sessions) -> None:
    old, _ = _prefixes()
    await _insert(sessions, old, _held_rows(), outbox=[])
    ids = [old + r["id"] for r in _held_rows()] + [old + "missing"]
    async with sessions() as session:
        rows = await session.execute(repository._HELD, {"ids": ids, "worker": WORKER})
        reference = {row.id: row.attempts for row in rows}
        held = await pipeline_sqlite.held_claims(session, ids, worker=WORKER)
    assert held == reference
    assert old + "other-worker" not in held
    assert old + "not-sending" not in held
    assert held[old + "stale-claim"] == 1


async def test_outcomes_of_every_shape_are_written_as_cores_write_them(
    sessions: Sessions, core: Any
) -> None:
    old, new = _prefixes()
    everything = [r["id"] for r in _held_rows()]
    for prefix in (old, new):
        outbox = [i for i in everything if "no-" not in i]
        await _insert(sessions, prefix, _held_rows(), outbox=outbox)
    random.seed(7)  # the same backoff jitter for both
    core.on()
    held_old = await _apply(sessions, _outcomes(old), fast=False)
    core.off()
    random.seed(7)
    held_new = await _apply(sessions, _outcomes(new), fast=False)
    assert {i.removeprefix(new) for i in held_new} == {i.removeprefix(old) for i in held_old}
    assert "sent" in {i.removeprefix(new) for i in held_new}
    tables = await _tables(sessions, new)
    assert tables == await _tables(sessions, old)
    sent = next(m for m in tables["messages"] if m["id"] == "sent")
    assert sent["status"] == "sent"
    assert sent["sent_at"] is not None


async def test_ids_and_times_are_bound_as_stored(sessions: Sessions) -> None:
    ids: Sequence[str] = ["msg_1", 'msg_"2', "消息_3"]
    assert json_array(ids) == '["msg_1","msg_\\"2","消息_3"]'
    async with sessions() as session:
        later = NOW + timedelta(microseconds=5)
        assert pipeline_sqlite.stored_time(session, later) == "2026-05-01 12:00:00.000005"
