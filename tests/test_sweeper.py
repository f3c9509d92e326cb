"""The sweeper: scheduled messages, lost jobs, and patience while the queue has a backlog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from app.auth.schemas import Role
from app.auth.service import Principal
from app.messages.models import Outbox
from app.messages.schemas import MessageCreate
from app.messages.service import AcceptRequest
from app.messages.tasks import sweep_once
from app.queue.inprocess import InProcessQueue
from app.runtime import Runtime
from app.scenarios import service as scenarios
from app.scenarios.schemas import ScenarioCreate
from app.timeutil import utcnow
from tests.conftest import SCENARIO, VARIABLES, make_settings

SYSTEM = Principal(key_id="k", name="core", owner="core", role=Role.system)


@pytest.fixture
async def idle_runtime(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Runtime]:
    """A runtime whose queue nobody consumes, so jobs stay in it."""
    db = tmp_path / "icc.db"
    db.write_bytes(sqlite_template.read_bytes())
    settings = make_settings(f"sqlite:///{db}", None)
    settings.queue.redelivery_grace = 1.0
    runtime = Runtime(settings, run_workers=False)
    await runtime.start()
    scenarios.clear_cache()
    async with runtime.sessionmaker() as session:
        await scenarios.create(session, ScenarioCreate.model_validate(SCENARIO))
        await session.commit()
    yield runtime
    await runtime.close()
    scenarios.clear_cache()


async def _age(runtime: Runtime, seconds: float) -> None:
    async with runtime.sessionmaker() as session:
        await session.execute(
            update(Outbox).values(enqueued_at=utcnow() - timedelta(seconds=seconds))
        )
        await session.commit()


async def test_waiting_messages_are_not_copied_while_the_queue_has_a_backlog(
    idle_runtime: Runtime,
) -> None:
    body = MessageCreate.model_validate(
        {
            "scenario": "account_movement",
            "customer_id": "C1",
            "variables": VARIABLES,
            "recipient": {"phone": "13800001234"},
        }
    )
    await idle_runtime.accept(AcceptRequest("account_movement", "core", body, None))
    queue = idle_runtime.queue
    assert isinstance(queue, InProcessQueue)
    assert await queue.backlog() == 1
    await _age(idle_runtime, 2.0)  # past the grace, but the job is still queued
    assert await sweep_once(idle_runtime) == 0
    await _age(idle_runtime, 5.0)  # past the patience: enqueue again all the same
    assert await sweep_once(idle_runtime) == 1
    assert await queue.backlog() == 2
    while await queue.backlog():  # the jobs are lost (e.g. a wiped Redis)
        queue._queue.get_nowait()
    await _age(idle_runtime, 2.0)
    assert await sweep_once(idle_runtime) == 1  # an empty queue: the grace alone counts
    assert await sweep_once(idle_runtime) == 0  # and it was marked enqueued
