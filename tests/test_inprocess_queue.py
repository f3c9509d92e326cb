"""The embedded queue's consumers: jobs that arrive close together are sent as one."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from app.queue.inprocess import InProcessQueue
from app.runtime import Runtime
from channels.base import CHANNELS, ProviderContext
from channels.sandbox import SandboxProvider
from tests.conftest import Platform, make_settings, send_body


async def _until(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


class Recorder:
    def __init__(self) -> None:
        self.jobs: list[list[str]] = []
        self.started: list[float] = []

    async def __call__(self, ids: list[str]) -> None:
        self.started.append(time.monotonic())
        self.jobs.append(ids)
        await asyncio.sleep(0.05)  # a send in progress keeps its consumer busy


async def test_jobs_arriving_while_a_consumer_gathers_merge_into_one() -> None:
    handler = Recorder()
    queue = InProcessQueue(handler, workers=4, chunk_size=200, linger=1.0)
    await queue.start()
    try:
        for i in range(5):  # five accepted groups, 10 ms apart: idle consumers are waiting
            await queue.enqueue([f"m{i}a", f"m{i}b"])
            await asyncio.sleep(0.01)
        await _until(lambda: bool(handler.jobs), timeout=3.0)
        assert handler.jobs == [[f"m{i}{s}" for i in range(5) for s in "ab"]]
    finally:
        await queue.close()


async def test_a_lone_job_waits_no_longer_than_the_linger() -> None:
    handler = Recorder()
    queue = InProcessQueue(handler, workers=2, chunk_size=200, linger=0.05)
    await queue.start()
    try:
        enqueued = time.monotonic()
        await queue.enqueue(["m1"])
        await _until(lambda: bool(handler.jobs), timeout=3.0)
        assert handler.jobs == [["m1"]]
        assert handler.started[0] - enqueued >= 0.04
    finally:
        await queue.close()


async def test_a_full_chunk_goes_at_once_and_gathering_stops_at_a_chunk() -> None:
    handler = Recorder()
    queue = InProcessQueue(handler, workers=1, chunk_size=3, linger=0.2)
    await queue.start()
    try:
        enqueued = time.monotonic()
        await queue.enqueue(["a", "b", "c", "d"])  # a full chunk, then the rest
        await _until(lambda: bool(handler.jobs), timeout=3.0)
        assert handler.jobs == [["a", "b", "c"]]
        assert handler.started[0] - enqueued < 0.15  # a full chunk does not linger
        await _until(lambda: len(handler.jobs) == 2, timeout=3.0)
        assert handler.jobs == [["a", "b", "c"], ["d"]]
        # the one consumer took the rest after its first job, lingering for more
        assert handler.started[1] - handler.started[0] >= 0.2
    finally:
        await queue.close()


async def test_jobs_arriving_while_one_is_sent_wait_for_it_and_merge() -> None:
    """While a job is being sent, the jobs arriving meanwhile wait for it (other consumers
    are idle) and then go as one: fewer, larger claims and outcome groups."""
    handler = Recorder()  # each job takes 50 ms
    queue = InProcessQueue(handler, workers=4, chunk_size=200, linger=0.001, patience=1.0)
    await queue.start()
    try:
        await queue.enqueue(["a"])
        await _until(lambda: bool(handler.jobs), timeout=3.0)
        for name in ("b", "c", "d"):  # within a's 50 ms
            await queue.enqueue([name])
            await asyncio.sleep(0.005)
        await _until(lambda: len(handler.jobs) == 2, timeout=3.0)
        assert handler.jobs == [["a"], ["b", "c", "d"]]
        assert handler.started[1] - handler.started[0] >= 0.045  # once a was sent
    finally:
        await queue.close()


class Slow(Recorder):
    """The first job hangs (a provider that does not answer) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, ids: list[str]) -> None:
        self.started.append(time.monotonic())
        self.jobs.append(ids)
        if len(self.jobs) == 1:
            await self.release.wait()


async def _sending_one(handler: Slow, *, workers: int, patience: float) -> InProcessQueue:
    """A started queue, one of whose consumers is held sending the job ``stuck``."""
    queue = InProcessQueue(
        handler, workers=workers, chunk_size=200, linger=0.001, patience=patience
    )
    await queue.start()
    await queue.enqueue(["stuck"])
    await _until(lambda: bool(handler.jobs), timeout=3.0)
    return queue


async def test_a_slow_send_holds_the_next_job_no_longer_than_the_patience() -> None:
    handler = Slow()
    queue = await _sending_one(handler, workers=4, patience=0.1)
    try:
        enqueued = time.monotonic()
        await queue.enqueue(["next"])
        await _until(lambda: len(handler.jobs) == 2, timeout=3.0)
        waited = handler.started[1] - enqueued
        assert 0.08 <= waited < 1.0, waited  # another consumer took it, after the patience
        assert not handler.release.is_set()  # while the first is still being sent
    finally:
        handler.release.set()
        await queue.close()


async def test_close_stops_a_consumer_waiting_its_turn_when_a_job_arrives_meanwhile() -> None:
    """A consumer waits for its turn (a job is being sent, another waits within the
    patience); a job arrives in the same loop turn as close() cancels the consumers. On
    Python 3.11, asyncio.wait_for returned the event instead of the cancellation: that
    consumer went on to wait for a job forever, and so did close() (a CI run hung in a
    fixture's teardown)."""
    handler = Slow()
    queue = await _sending_one(handler, workers=2, patience=30.0)
    try:
        await queue.enqueue(["waiting"])  # the other consumer now waits for its turn
        await asyncio.sleep(0.05)
        assert handler.jobs == [["stuck"]]
        await queue.enqueue(["late"])  # sets the event, then at once:
        await asyncio.wait_for(queue.close(), timeout=5.0)
    finally:
        handler.release.set()
    assert handler.jobs == [["stuck"]]


class Swallowing(Recorder):
    """A job whose send swallows its cancellation (as third-party code may)."""

    async def __call__(self, ids: list[str]) -> None:
        self.jobs.append(ids)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)


async def test_close_ends_a_consumer_whose_job_swallowed_the_cancel() -> None:
    handler = Swallowing()
    queue = InProcessQueue(handler, workers=1, chunk_size=200, linger=0.001)
    await queue.start()
    await queue.enqueue(["a"])
    await _until(lambda: bool(handler.jobs), timeout=3.0)
    await asyncio.wait_for(queue.close(), timeout=5.0)


class Counting(SandboxProvider):
    """The sandbox, counting the sends under way at once (each yields to the loop)."""

    type_name = "counting_sandbox"
    in_flight = 0
    most = 0

    async def send(self, **kwargs: Any) -> Any:
        Counting.in_flight += 1
        Counting.most = max(Counting.most, Counting.in_flight)
        try:
            await asyncio.sleep(0)
            return await super().send(**kwargs)
        finally:
            Counting.in_flight -= 1


class Remote(Counting):
    """As if it sent to a remote service (ChannelProvider.local)."""

    type_name = "remote_sandbox"
    local = False


@pytest.mark.parametrize("local", [True, False], ids=["local", "remote"])
async def test_a_gathered_job_is_claimed_as_one_slice_with_local_providers(
    tmp_path: Path, sqlite_template: Path, local: bool
) -> None:
    """The embedded runtime sends an in-process job (at most a chunk) as one slice when its
    providers are local (the sandbox): one claim for its 100 messages, not one per
    `concurrency` (32) of them, sent one after the other by one task. With a remote provider
    the job keeps its slices, each claimed shortly before it is sent, and sends them
    concurrently."""
    db = tmp_path / "icc.db"
    shutil.copy(sqlite_template, db)
    runtime = Runtime(make_settings(f"sqlite:///{db}", None), run_workers=True)
    await runtime.start()
    context = ProviderContext(sessionmaker=runtime.sessionmaker)
    provider = Counting if local else Remote
    Counting.most = 0
    for channel in CHANNELS:
        runtime.providers.replace(
            channel, [provider(account=f"p-{channel}", channel=channel, context=context)]
        )
    claims: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith("UPDATE messages") and "RETURNING" in statement:  # a claim
            claims.append(statement)

    try:
        platform = Platform("sqlite", runtime)
        await platform.create_keys()
        await platform.create_scenario()
        event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
        items = [send_body(customer_id=f"C{i}") for i in range(100)]
        for item in items:
            del item["scenario"]
        async with platform.client("system") as client:
            response = await client.post(
                "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
            )
        assert response.status_code == 202, response.text
        ids = [r["id"] for r in response.json()["items"]]
        for message_id in ids:
            assert (await platform.wait_terminal(message_id))["status"] == "delivered"
        assert (len(claims) == 1) is local, claims
        assert (Counting.most == 1) is local, Counting.most
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
        await runtime.close()
