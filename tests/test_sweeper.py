"""The sweeper: scheduled messages, lost jobs, and queued jobs left alone however old."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from app.messages.models import Outbox
from app.messages.schemas import MessageCreate
from app.messages.service import AcceptRequest
from app.messages.tasks import sweep_once
from app.queue.inprocess import InProcessQueue
from app.runtime import Runtime
from app.timeutil import utcnow
from tests.conftest import VARIABLES


async def _age(runtime: Runtime, seconds: float) -> None:
    async with runtime.sessionmaker() as session:
        await session.execute(
            update(Outbox).values(enqueued_at=utcnow() - timedelta(seconds=seconds))
        )
        await session.commit()


async def _send(runtime: Runtime, customer_id: str) -> str:
    body = MessageCreate.model_validate(
        {
            "scenario": "account_movement",
            "customer_id": customer_id,
            "variables": VARIABLES,
            "recipient": {"phone": "13800001234"},
        }
    )
    accepted = await runtime.accept(AcceptRequest("account_movement", "core", body, None))
    return accepted.message.id


def _jobs(queue: InProcessQueue) -> list[list[str]]:
    return [job.ids for job in queue._queue._queue]


async def test_a_job_still_in_the_queue_is_never_copied_however_long_it_waits(
    idle_runtime: Runtime,
) -> None:
    """A campaign held back by a provider's rate limit waits in the queue for hours; its
    messages must not be enqueued again every few minutes."""
    idle_runtime.settings.queue.redelivery_grace = 1.0
    queue = idle_runtime.queue
    assert isinstance(queue, InProcessQueue)
    first = await _send(idle_runtime, "C1")
    await asyncio.sleep(1.5)  # past the grace
    second = await _send(idle_runtime, "C2")
    # an hour later: both the database's and the queue's times an hour back
    await _age(idle_runtime, 3600.0)
    jobs = queue._queue._queue
    jobs.extend([job._replace(at=job.at - 3600.0) for job in [jobs.popleft() for _ in jobs.copy()]])
    for _ in range(3):
        assert await sweep_once(idle_runtime) == 0
    assert _jobs(queue) == [[first], [second]]
    assert await queue.waiting_since() is not None


async def test_a_job_taken_and_lost_is_enqueued_again(idle_runtime: Runtime) -> None:
    idle_runtime.settings.queue.redelivery_grace = 1.0
    queue = idle_runtime.queue
    assert isinstance(queue, InProcessQueue)
    first = await _send(idle_runtime, "C1")
    await asyncio.sleep(1.5)
    second = await _send(idle_runtime, "C2")
    queue._queue.get_nowait()  # the first job is taken; its consumer dies before claiming
    # the second job still waits: the first message was enqueued well before it
    assert await sweep_once(idle_runtime) == 1
    assert _jobs(queue) == [[second], [first]]
    assert await sweep_once(idle_runtime) == 0  # marked enqueued again
    while await queue.backlog():  # every job lost (a wiped Redis, a restarted process)
        queue._queue.get_nowait()
    assert await queue.waiting_since() is None
    assert await sweep_once(idle_runtime) == 0  # both enqueued within the grace
    await asyncio.sleep(1.2)
    assert await sweep_once(idle_runtime) == 2  # an empty queue: the grace alone counts
    assert sorted(i for ids in _jobs(queue) for i in ids) == sorted([first, second])
