"""Frequency caps on the send path: every patch a customer receives counts, those of the
same group of sends (a batch, single sends accepted together) and those sharing a time, each
by when it reaches the customer (a scheduled one: at its send time)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.main import create_app
from app.messages.repository import MESSAGES
from app.runtime import Runtime
from app.strategies import repository as strategies_repository
from tests.conftest import Platform
from tests.test_strategies_api import _outside_quiet_hours, _send, _setup

VARS = {"account_tail": "1234", "amount": "1200.00"}


async def _cap_wealth(platform: Platform, max_patches: int | None, *, setup: bool = True) -> None:
    async with platform.client("marketer") as client:
        if setup:
            await _setup(platform, client)
        current = (await client.get("/v1/strategies/wealth")).json()
        body = {
            k: v for k, v in current.items() if k not in ("id", "key", "created_at", "updated_at")
        }
        cap = None if max_patches is None else {"max_patches": max_patches, "days": 7}
        body["frequency_cap"] = cap
        assert (await client.put("/v1/strategies/wealth", json=body)).status_code == 200


async def _messages(platform: Platform, ids: list[str]) -> list[dict[str, Any]]:
    async with platform.client("system") as client:
        return [(await client.get(f"/v1/messages/{i}")).json() for i in ids]


async def test_a_batch_to_one_customer_respects_the_frequency_cap(platform: Platform) -> None:
    """Cap 1 patch a week: of a batch of 3 account movements of R1, one carries the patch."""
    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 1)
    items = [{"customer_id": "R1", "variables": VARS} for _ in range(3)]
    async with platform.client("system") as client:
        answer = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
    assert answer.status_code == 202, answer.text
    ids = [item["id"] for item in answer.json()["items"]]
    patched = [m for m in await _messages(platform, ids) if m["decision"]["strategy"]]
    assert len(patched) <= 1, f"{len(patched)} patches in one batch despite a cap of 1"


async def test_concurrent_single_sends_respect_the_frequency_cap(platform: Platform) -> None:
    """Concurrent single sends (accepted together in one group): one of them gets the patch."""
    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 1)
    body = {"scenario": "account_movement", "customer_id": "R1", "variables": VARS}
    async with platform.client("system") as client:
        answers = await asyncio.gather(*(client.post("/v1/messages", json=body) for _ in range(3)))
    assert all(a.status_code == 202 for a in answers)
    ids = [a.json()["id"] for a in answers]
    patched = [m for m in await _messages(platform, ids) if m["decision"]["strategy"]]
    assert len(patched) <= 1, f"{len(patched)} patches from concurrent sends despite a cap of 1"


async def test_patches_sharing_a_timestamp_each_count_toward_the_cap(
    platform: Platform,
) -> None:
    """Cap 2 a week: a batch of 2 carries 2 patches, created at the same time (as every
    message of a batch is); both count, so a later single send gets none."""
    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 2)
    items = [{"customer_id": "R1", "variables": VARS} for _ in range(2)]
    async with platform.client("system") as client:
        answer = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
    ids = [item["id"] for item in answer.json()["items"]]
    first = await _messages(platform, ids)
    assert [m["decision"]["strategy"] for m in first] == ["wealth", "wealth"]
    third = await _send(platform, "R1")
    assert third["decision"]["strategy"] is None, "a third patch within a cap of 2 a week"


async def test_scheduled_patches_count_when_they_go_out(platform: Platform) -> None:
    """Cap 1 patch a week. Two account notices scheduled ten days ahead, 30 minutes apart:
    patches count by when they reach the customer, so the second one gets none."""

    _outside_quiet_hours(platform)  # same time of day ten days ahead: outside quiet hours
    await _cap_wealth(platform, 1)
    first_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    first = await _send(platform, "R1", send_at=first_at.isoformat())
    assert first["status"] == "scheduled"
    assert first["decision"]["strategy"] == "wealth"
    second = await _send(platform, "R1", send_at=(first_at + timedelta(minutes=30)).isoformat())
    assert second["decision"]["strategy"] is None, (
        "two patches 30 minutes apart despite a cap of 1 a week"
    )


async def test_a_scheduled_send_counts_the_patches_nearest_its_own_time(
    platform: Platform,
) -> None:
    """Cap 1 a week; patches scheduled 2 and 9 days ahead (a week apart, both allowed). A
    notice scheduled 10 days ahead is a day after the second: it gets none, though the
    lookup keeps one patch a side (the cap's size) and the first is nearer to now."""

    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 1)
    today = datetime.now(UTC).replace(microsecond=0)
    strategies = []
    for days in (2, 9, 10):
        sent = await _send(platform, "R1", send_at=(today + timedelta(days=days)).isoformat())
        strategies.append(sent["decision"]["strategy"])
    assert strategies == ["wealth", "wealth", None]


async def test_a_batch_with_send_times_far_apart_counts_each_customers_own_patches(
    platform: Platform,
) -> None:
    """Cap 1 a week. R1 has patches scheduled on day 2 and day 20. A batch: a notice to R2
    now and one to R1 on day 20 + 1 h: R1's is an hour from a patch and gets none (the
    lookup is anchored at the batch's earliest time, and reached past its nearest patch)."""
    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 1)
    today = datetime.now(UTC).replace(microsecond=0)
    for days in (2, 20):
        sent = await _send(platform, "R1", send_at=(today + timedelta(days=days)).isoformat())
        assert sent["decision"]["strategy"] == "wealth"
    later = (today + timedelta(days=20, hours=1)).isoformat()
    items = [
        {"customer_id": "R2", "variables": VARS},
        {"customer_id": "R1", "variables": VARS, "send_at": later},
    ]
    async with platform.client("system") as client:
        answer = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
    assert answer.status_code == 202, answer.text
    r2, r1 = await _messages(platform, [item["id"] for item in answer.json()["items"]])
    assert r2["decision"]["strategy"] == "wealth"
    assert r1["decision"]["strategy"] is None


@asynccontextmanager
async def _replicas(platform: Platform, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """System clients of ``count`` API replicas on the platform's database: the platform's
    own and others with a runtime each (engine, pool, group commit), as processes have."""
    runtimes = [platform.runtime]
    apps = [platform.app]
    try:
        for _ in range(count - 1):
            runtimes.append(Runtime(platform.runtime.settings, run_workers=False))
            await runtimes[-1].start()
            apps.append(create_app(platform.runtime.settings, runtime=runtimes[-1]))
        headers = {"Authorization": f"Bearer {platform.keys['system']}"}
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://icc.test", headers=headers
            )
            for app in apps
        ]
        yield clients
        for client in clients:
            await client.aclose()
    finally:
        for runtime in runtimes[1:]:
            await runtime.close()


class _ReadTogether:
    """In place of ``recent_patches``: holds each transaction that has just read recent
    patches until all ``sends`` have read theirs, the race between replicas made certain.
    It waits no longer for a send that cannot read yet because it waits for a lock: on
    PostgreSQL one seen waiting in pg_stat_activity; on SQLite any after half a second (a
    writer's transaction holds the database from its first statement)."""

    def __init__(self, platform: Platform, sends: int) -> None:
        self.platform = platform
        self.sends = sends
        self.read = 0
        self.original = strategies_repository.recent_patches

    async def __call__(self, session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        found = await self.original(session, *args, **kwargs)
        self.read += 1
        loop = asyncio.get_running_loop()
        postgres = self.platform.backend == "postgres"
        deadline = loop.time() + (10.0 if postgres else 0.5)
        while self.read < self.sends and loop.time() < deadline:
            if postgres and self.read + await self._waiting_for_locks() >= self.sends:
                break
            await asyncio.sleep(0.02)
        return found

    async def _waiting_for_locks(self) -> int:
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        async with self.platform.runtime.engine.connect() as conn:
            return int(await conn.scalar(waiting) or 0)


async def _patched(platform: Platform, ids: list[str]) -> list[str]:
    return [m["id"] for m in await _messages(platform, ids) if m["decision"]["strategy"]]


async def test_replicas_sending_at_once_respect_the_frequency_cap(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cap 1 patch a week; three API replicas accept a notice to R1 at the same moment,
    each transaction reading R1's recent patches before any has committed its own. Exactly
    one carries the patch: on PostgreSQL the later ones wait for the customer (an advisory
    lock) and read the patch once it is committed; on SQLite a writer holds the database
    from its first statement (BEGIN IMMEDIATE), so the sends take turns anyway."""
    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 1)
    monkeypatch.setattr(strategies_repository, "recent_patches", _ReadTogether(platform, 3))
    body = {"scenario": "account_movement", "customer_id": "R1", "variables": VARS}
    async with _replicas(platform, 3) as clients:
        answers = await asyncio.gather(*(c.post("/v1/messages", json=body) for c in clients))
    assert [a.status_code for a in answers] == [202] * 3, [a.text for a in answers]
    patched = await _patched(platform, [a.json()["id"] for a in answers])
    assert len(patched) == 1, f"{len(patched)} patches from 3 replicas despite a cap of 1"


async def test_a_batch_and_a_single_send_at_once_respect_the_frequency_cap(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cap 1 a week; one replica accepts a batch to R1 and 600 other customers (more than
    are held one by one: it holds their buckets), another a single send to R1 (which holds
    R1), both reading before either commits: R1 gets one patch."""
    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 1)
    monkeypatch.setattr(strategies_repository, "recent_patches", _ReadTogether(platform, 2))
    others = [
        {"customer_id": f"U{i:04d}", "recipient": {"phone": f"1390000{i:04d}"}, "variables": VARS}
        for i in range(600)
    ]
    batch = {
        "scenario": "account_movement",
        "items": [*others, {"customer_id": "R1", "variables": VARS}],
    }
    single = {"scenario": "account_movement", "customer_id": "R1", "variables": VARS}
    async with _replicas(platform, 2) as (one, other):
        batched, sent = await asyncio.gather(
            one.post("/v1/messages/batch", json=batch), other.post("/v1/messages", json=single)
        )
    assert batched.status_code == 202, batched.text
    assert sent.status_code == 202, sent.text
    ids = [batched.json()["items"][-1]["id"], sent.json()["id"]]
    patched = await _patched(platform, ids)
    assert len(patched) == 1, f"R1 got {len(patched)} patches despite a cap of 1"


def test_cap_lock_keys_are_sorted_int4_and_bounded() -> None:
    few = [f"C{i}" for i in range(strategies_repository.CAP_CUSTOMERS_EACH)]
    buckets, customers = strategies_repository.cap_lock_keys(few)
    assert buckets == sorted(buckets)
    assert customers == sorted(customers)
    assert len(customers) == len(few)
    assert all(-(2**31) <= k < 2**31 for k in customers)
    many = [f"C{i}" for i in range(10_000)]
    assert strategies_repository.cap_lock_keys(many) == (
        list(range(strategies_repository.CAP_BUCKETS)),
        [],
    )


# PostgreSQL only: SQLite takes no locks (its writer's transaction holds the database)
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_cap_locks_are_few_and_taken_in_one_statement(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a send under a capped strategy holds its customer and bucket; a batch
    to 601 customers holds their buckets only, not a lock each; each group takes its locks
    in one statement. A scenario without caps takes none."""
    statements: list[str] = []
    held: list[dict[int, int]] = []

    def count(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        values = params.values() if isinstance(params, dict) else params or ()
        if "pg_advisory" in statement and strategies_repository.CAP_BUCKET_LOCKS in values:
            statements.append(statement)

    original = strategies_repository.hold_for_caps

    async def holding(session: AsyncSession, customer_ids: Any) -> None:
        await original(session, customer_ids)
        mine = text(
            "SELECT classid, count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND locktype = 'advisory' AND classid IN (:buckets, :customers) GROUP BY classid"
        )
        namespaces = {
            "buckets": strategies_repository.CAP_BUCKET_LOCKS,
            "customers": strategies_repository.CAP_CUSTOMER_LOCKS,
        }
        held.append({int(k): int(n) for k, n in await session.execute(mine, namespaces)})

    monkeypatch.setattr(strategies_repository, "hold_for_caps", holding)
    event.listen(platform.runtime.engine.sync_engine, "before_cursor_execute", count)
    try:
        _outside_quiet_hours(platform)
        await _cap_wealth(platform, 1)
        await _send(platform, "R1")
        items = [
            {"customer_id": f"U{i:04d}", "recipient": {"phone": f"1390000{i:04d}"}}
            for i in range(600)
        ]
        items.append({"customer_id": "R1"})
        async with platform.client("system") as client:
            answer = await client.post(
                "/v1/messages/batch",
                json={
                    "scenario": "account_movement",
                    "items": [{**item, "variables": VARS} for item in items],
                },
            )
        assert answer.status_code == 202, answer.text
        await _cap_wealth(platform, None, setup=False)
        await _send(platform, "R1")  # no strategy of the scenario has a cap now
    finally:
        event.remove(platform.runtime.engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 2
    buckets, customers = (
        strategies_repository.CAP_BUCKET_LOCKS,
        strategies_repository.CAP_CUSTOMER_LOCKS,
    )
    single, batch = held
    assert single == {buckets: 1, customers: 1}
    assert 0 < batch[buckets] <= strategies_repository.CAP_BUCKETS
    assert customers not in batch


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_groups_of_other_customers_do_not_wait_for_each_other(platform: Platform) -> None:
    """PostgreSQL: two groups of 500 (an accept group's most, a campaign chunk) with no
    customer in common hold their caps at once: neither waits for the other's commit."""
    first, second = [f"A{i}" for i in range(500)], [f"B{i}" for i in range(500)]
    async with platform.runtime.sessionmaker() as one, platform.runtime.sessionmaker() as two:
        await strategies_repository.hold_for_caps(one, first)
        await two.execute(text("SET LOCAL lock_timeout = '2s'"))
        await strategies_repository.hold_for_caps(two, second)  # LockNotAvailable if it waited
        await two.rollback()
        await one.rollback()


async def test_a_batch_reads_the_patches_a_single_send_reads(platform: Platform) -> None:
    """recent_patches seeks a few customers one by one and reads a batch's in one statement
    (on PostgreSQL with the ids as one array): both find the same patches on either side of
    the decision time (two sent, one scheduled in two days)."""
    _outside_quiet_hours(platform)
    await _cap_wealth(platform, 5)
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    sent = [await _send(platform, "R1"), await _send(platform, "R1", send_at=later)]
    sent.append(await _send(platform, "R1"))
    assert all(m["decision"]["strategy"] for m in sent), "each of them is patched"
    others = [f"X{i}" for i in range(strategies_repository.SEEK_CUSTOMERS + 12)]
    found = []
    async with platform.runtime.sessionmaker() as session:
        for customers in (["R1"], ["R1", *others]):
            patches = await strategies_repository.recent_patches(
                session, customers, at=datetime.now(UTC), span=timedelta(days=7), most=5
            )
            found.append({c: sorted(at) for c, at in patches.items()})
    assert found[0] == found[1]
    assert list(found[0]) == ["R1"]
    assert len(found[0]["R1"]) == 3


async def test_single_sends_seeks_on_sqlite_read_what_the_core_statement_reads(
    idle_runtime: Runtime,
) -> None:
    """On SQLite the seeks of a few customers run as driver SQL (the compiled Core statement,
    its parameters in order): for every group size and padding, before and after the
    decision time, scheduled and sent patches, with limits, they read exactly what the Core
    statement executed through the session reads."""
    rng = random.Random(7)
    at = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    rows = []
    for n in range(400):
        reach = at + timedelta(minutes=rng.randint(-12 * 24 * 60, 12 * 24 * 60))
        scheduled = n % 3 == 0
        rows.append(
            {
                "id": f"msg_{n:05d}",
                "owner": "cards",
                "scenario": "account_movement",
                "customer_id": f"K{rng.randrange(60):02d}",
                "recipient": {},
                "variables": {},
                "channels": ["sms"],
                "channel_index": 0,
                "status": "queued",
                "attempts": 0,
                "channel_attempts": 0,
                "content": {},
                "decision": {},
                "patch": None if n % 5 == 0 else f"strategy_{n % 4}",
                "send_at": reach if scheduled else None,
                "created_at": reach - timedelta(days=2) if scheduled else reach,
                "updated_at": reach,
            }
        )
    customers = [f"K{i:02d}" for i in range(62)]  # two with no message at all
    async with idle_runtime.sessionmaker() as session:
        await session.execute(insert(MESSAGES), rows)
        await session.commit()
    async with idle_runtime.sessionmaker() as session:
        for count in (1, 2, 3, 5, 8, 9, 17, 24, 25, 33, 47, 48):
            chosen = rng.sample(customers, count)
            for most, span, latest in (
                (1, 7, None),
                (3, 7, at + timedelta(days=2)),
                (50, 30, None),
            ):
                window = timedelta(days=span)
                found = await strategies_repository.recent_patches(
                    session, chosen, at=at, span=window, most=most, latest=latest
                )
                expected = await _core_seeks(session, chosen, at, window, most, latest)
                assert {c: sorted(t) for c, t in found.items()} == expected, (count, most)
                assert all(t.tzinfo is UTC for times in found.values() for t in times)
            assert expected, "some of the chosen customers have patches in the window"


async def _core_seeks(
    session: AsyncSession,
    customers: list[str],
    at: datetime,
    span: timedelta,
    most: int,
    latest: datetime | None,
) -> dict[str, list[datetime]]:
    """The seeks as recent_patches ran them before: the Core statement through the session."""
    repo = strategies_repository
    size = next(n for n in repo._SEEK_SIZES if n >= len(customers))
    padded = customers + [repo._NO_CUSTOMER] * (size - len(customers))
    until = (latest or at) + span
    spread = math.ceil(((latest or at) - at) / span) + 1
    params: dict[str, Any] = {f"c{i}": c for i, c in enumerate(padded)}
    params |= {"most": most, "most_after": most * spread}
    times = {"since": at - span, "at": at, "until": until}
    params |= {k: repo._sqlite_time(v) for k, v in times.items()}
    found: dict[str, list[datetime]] = {}
    for customer, reached in await session.execute(repo._seeks(size, True), params):
        found.setdefault(customer, []).append(reached)
    return {c: sorted(t) for c, t in found.items()}
