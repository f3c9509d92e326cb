"""Crash safety on PostgreSQL + Redis with real ``icc worker`` processes.

2,000 messages are accepted through the batch API; mid-run the worker is SIGKILLed (then a new
one started), or the queue's Redis database is wiped. Either way every message must end
terminal, exactly once in the sandbox provider's records, with a complete timeline: the
outbox and the sweeper bring back whatever the dead process or the lost jobs held.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import distinct, func, select

from app.auth.schemas import Role
from app.auth.service import create_key
from app.main import create_app
from app.messages.models import Message, MessageEvent, Outbox
from app.messages.schemas import TERMINAL_STATUSES
from app.migrate import upgrade
from app.runtime import Runtime
from app.sandbox.models import SandboxDelivery
from app.scenarios import service as scenario_service
from app.settings import QueueSettings, Settings
from tests import services
from tests.conftest import SCENARIO, VARIABLES, truncate_all
from tests.worker_procs import Workers, forget_queue, wait_until_ready, with_redis_db

pytestmark = pytest.mark.slow

TOTAL = 2_000
CRASH_AFTER = 400  # terminal messages before the crash: well under way...
CRASH_BY = 1_200  # ...and far from done
FINISH_TIMEOUT = 120.0
PROGRESS_TIMEOUT = 60.0
# The wipe test FLUSHes this Redis database, so it must hold nothing but this test's queue.
WIPE_DB = int(os.environ.get("ICC_TEST_REDIS_WIPE_DB", "9"))
TERMINAL = sorted(str(s) for s in TERMINAL_STATUSES)
# Short lease, grace and sweep so recovery takes seconds; few concurrent sends per worker so
# that the crash reliably lands mid-run with messages in flight.
QUEUE = {
    "workers": 2,
    "concurrency": 8,
    "chunk_size": 50,
    "lease_seconds": 3.0,
    "redelivery_grace": 2.0,
    "sweep_interval": 0.5,
}


@pytest.fixture(scope="module")
def crash_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this module."""
    problem = services.postgres_available()
    if problem is not None:
        services.unavailable("PostgreSQL", problem)
    name = f"icc_crash_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = asyncio.run(services.create_database(name))
    upgrade(url)
    yield url
    asyncio.run(services.drop_database(name))


@pytest.fixture(scope="module")
def redis_server() -> str:
    problem = services.redis_available()
    if problem is not None:
        services.unavailable("Redis", problem)
    return services.REDIS_URL


def crash_settings(database_url: str, redis_url: str) -> Settings:
    queue = QueueSettings(name=f"icc:crash:{uuid.uuid4().hex[:10]}", **QUEUE)
    return Settings(database_url=database_url, redis_url=redis_url, queue=queue)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    procs = Workers(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


@dataclass(frozen=True)
class Progress:
    terminal: int
    claimed: int  # status 'sending': leased by a worker
    recorded: int  # claimed, and already recorded by the sandbox provider


class Harness:
    """The accepting side (API on an accept-only runtime) and the database probes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime.settings, runtime=runtime)
        self.keys: dict[str, str] = {}

    def client(self, role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://icc.test",
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=120,
        )

    async def prepare(self) -> None:
        async with self.runtime.sessionmaker() as session:
            for role in (Role.system, Role.marketer, Role.analyst):
                _, self.keys[role.value] = await create_key(
                    session, name=f"crash-{role.value}", role=role, owner=f"crash-{role.value}"
                )
            await session.commit()
        async with self.client("marketer") as client:
            response = await client.post("/v1/scenarios", json=SCENARIO)
        assert response.status_code == 201, response.text

    async def send_batch(self) -> list[str]:
        items = [
            {
                "customer_id": f"C{i:05d}",
                "recipient": {"phone": f"138{i:08d}"},
                "variables": VARIABLES,
                "idempotency_key": f"crash-{i}",
            }
            for i in range(TOTAL)
        ]
        async with self.client("system") as client:
            response = await client.post(
                "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
            )
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["accepted"] == TOTAL, body["items"][:5]
        return [item["id"] for item in body["items"]]

    async def statuses(self) -> Counter[str]:
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(select(Message.status, func.count()).group_by(Message.status))
            return Counter({status: int(n) for status, n in rows.all()})

    async def progress(self) -> Progress:
        sending = Message.status == "sending"
        async with self.runtime.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        func.count().filter(Message.status.in_(TERMINAL)),
                        func.count().filter(sending),
                        func.count(SandboxDelivery.id).filter(sending),
                    )
                    .select_from(Message)
                    .outerjoin(SandboxDelivery, SandboxDelivery.message_id == Message.id)
                )
            ).one()
        return Progress(terminal=int(row[0]), claimed=int(row[1]), recorded=int(row[2]))

    async def wait_for_crash_point(
        self, workers: Workers, proc: subprocess.Popen[bytes]
    ) -> Progress:
        """Poll until enough messages are terminal while others are claimed; prefer a moment
        when the provider has recorded a send whose message is not finished yet (the window
        in which a crash tempts a second send)."""
        deadline = asyncio.get_running_loop().time() + PROGRESS_TIMEOUT
        while True:
            now = await self.progress()
            if now.terminal >= TOTAL:
                pytest.fail(f"all {TOTAL} sent before the crash point: the test proves nothing")
            in_window = now.recorded > 0 or now.terminal >= CRASH_BY
            if now.terminal >= CRASH_AFTER and now.claimed > 0 and in_window:
                return now
            workers.check_alive(proc)
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"no progress: {now}\n{workers.tails()}")
            await asyncio.sleep(0.002)

    async def claimed_ids(self) -> set[str]:
        async with self.runtime.engine.connect() as conn:
            rows = await conn.scalars(select(Message.id).where(Message.status == "sending"))
            return set(rows.all())

    async def attempts_of(self, ids: set[str]) -> dict[str, int]:
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                select(Message.id, Message.attempts).where(Message.id.in_(sorted(ids)))
            )
            return {message_id: int(n) for message_id, n in rows.all()}

    async def wait_all_terminal(self, workers: Workers, proc: subprocess.Popen[bytes]) -> None:
        deadline = asyncio.get_running_loop().time() + FINISH_TIMEOUT
        while True:
            counts = await self.statuses()
            if sum(counts[s] for s in TERMINAL) == TOTAL and await self.outbox_size() == 0:
                return
            workers.check_alive(proc)
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(
                    f"not all messages terminal after {FINISH_TIMEOUT:.0f}s: {dict(counts)}, "
                    f"outbox {await self.outbox_size()}\n{workers.tails()}"
                )
            await asyncio.sleep(0.2)

    async def outbox_size(self) -> int:
        async with self.runtime.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(Outbox)) or 0)


@asynccontextmanager
async def accepting(settings: Settings) -> AsyncIterator[Harness]:
    """A fresh platform state in the module's database, with an accept-only runtime."""
    scenario_service.clear_cache()
    runtime = Runtime(settings, run_workers=False)
    try:
        await truncate_all(runtime)
        await runtime.start()
        harness = Harness(runtime)
        await harness.prepare()
        yield harness
    finally:
        await runtime.close()
        scenario_service.clear_cache()


def timeline_problem(types: list[str], attempts: int, *, stored: bool = False) -> str | None:
    """A complete timeline: accepted, queued, one 'sending' per claim, sent, delivered. The
    first two are told by the message row, not stored (``stored``: the rows only)."""
    if stored:
        types = ["accepted", "queued", *types]
    middle = types[2:-2]
    if (
        types[:2] != ["accepted", "queued"]
        or types[-2:] != ["sent", "delivered"]
        or not middle
        or set(middle) != {"sending"}
    ):
        return f"incomplete timeline {types}"
    if len(middle) != attempts:
        return f"{len(middle)} 'sending' events for {attempts} attempts: {types}"
    return None


async def assert_each_sent_once(harness: Harness, ids: list[str]) -> None:
    """All delivered, outbox empty, one sandbox record per message, complete timelines."""
    assert await harness.statuses() == Counter({"delivered": TOTAL})
    assert await harness.outbox_size() == 0
    async with harness.runtime.engine.connect() as conn:
        assert int(await conn.scalar(select(func.count()).select_from(Message)) or 0) == TOTAL
        records, distinct_messages = (
            await conn.execute(
                select(func.count(), func.count(distinct(SandboxDelivery.message_id)))
            )
        ).one()
        assert (records, distinct_messages) == (TOTAL, TOTAL), "lost or duplicated sends"
        matched = await conn.scalar(
            select(func.count())
            .select_from(Message)
            .join(SandboxDelivery, SandboxDelivery.id == Message.provider_message_id)
            .where(
                SandboxDelivery.message_id == Message.id,
                SandboxDelivery.idempotency_key == Message.id + ":sms",
                Message.lease_until.is_(None),
                Message.sent_at.is_not(None),
                Message.delivered_at.is_not(None),
            )
        )
        assert matched == TOTAL, "messages not matching their one sandbox record"
        attempts = dict((await conn.execute(select(Message.id, Message.attempts))).all())
        events = await conn.execute(
            select(MessageEvent.message_id, MessageEvent.type).order_by(MessageEvent.id)
        )
        timelines: dict[str, list[str]] = defaultdict(list)
        for message_id, type_ in events.all():
            timelines[message_id].append(type_)
    assert sorted(attempts) == sorted(ids)
    problems = {
        m: p
        for m in ids
        if (p := timeline_problem(timelines[m], attempts[m], stored=True)) is not None
    }
    assert not problems, f"{len(problems)} bad timelines, e.g. {list(problems.items())[:3]}"
    await assert_api_timelines(harness, sorted(ids, key=lambda m: -attempts[m])[:10] + ids[:5])


async def assert_api_timelines(harness: Harness, ids: list[str]) -> None:
    """The API tells the same story, including for messages a crash made claim twice."""
    async with harness.client("analyst") as client:
        for message_id in ids:
            response = await client.get(f"/v1/messages/{message_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert body["status"] == "delivered"
            types = [e["type"] for e in body["events"]]
            assert timeline_problem(types, body["attempts"]) is None, body


async def test_worker_sigkilled_mid_run_loses_and_duplicates_nothing(
    crash_database: str, redis_server: str, workers: Workers
) -> None:
    settings = crash_settings(crash_database, redis_server)
    redis = aioredis.Redis.from_url(redis_server)
    try:
        async with accepting(settings) as harness:
            first = workers.start(settings)
            await wait_until_ready(redis, settings, workers, first)
            ids = await harness.send_batch()
            seen = await harness.wait_for_crash_point(workers, first)
            workers.kill(first)
            left = await harness.progress()
            stranded = await harness.claimed_ids()
            print(f"\nSIGKILL: seen {seen}, left {left}")
            assert left.terminal < TOTAL, "the worker finished before the crash: proves nothing"
            await redis.delete(f"{settings.queue.name}:health-check")
            second = workers.start(settings)
            await wait_until_ready(redis, settings, workers, second)
            await harness.wait_all_terminal(workers, second)
            await assert_each_sent_once(harness, ids)
            # what the dead worker held came back once its lease expired
            assert all(n >= 2 for n in (await harness.attempts_of(stranded)).values())
    finally:
        workers.close()
        await forget_queue(redis, settings.queue.name)
        await redis.aclose()


async def test_queue_redis_wiped_mid_run_loses_and_duplicates_nothing(
    crash_database: str, redis_server: str, workers: Workers
) -> None:
    redis_url = with_redis_db(redis_server, WIPE_DB)
    settings = crash_settings(crash_database, redis_url)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with accepting(settings) as harness:
            worker = workers.start(settings)
            await wait_until_ready(redis, settings, workers, worker)
            ids = await harness.send_batch()
            await harness.wait_for_crash_point(workers, worker)
            queued_jobs = await redis.zcard(settings.queue.name)
            await redis.flushdb()
            left = await harness.progress()
            print(f"\nFLUSHDB: {queued_jobs} jobs queued, left {left}")
            assert left.terminal < TOTAL, "all sent before the wipe: proves nothing"
            assert queued_jobs > 0, "no queued jobs to lose; the wipe proves nothing"
            await harness.wait_all_terminal(workers, worker)
            await assert_each_sent_once(harness, ids)
    finally:
        workers.close()
        await forget_queue(redis, settings.queue.name)
        await redis.aclose()
