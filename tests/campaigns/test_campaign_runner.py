"""The campaign runner on both databases: counts, experiment split, chunking, crash safety,
pause/resume/cancel, concurrent runners, quiet hours, throttling and consent."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from abtest.assignment import Variant, assign
from app.campaigns import repository
from app.campaigns.runner import CampaignRunner, quiet_until
from app.customers import erasure
from app.experiments.models import Assignment, Experiment
from app.settings import MarketingSettings
from app.timeutil import utcnow
from strategies.decide import HourWindow
from tests.campaigns import helpers
from tests.conftest import Platform


@pytest.fixture
async def manual(platform: Platform) -> Platform:
    """The platform without its campaign loop: the tests drive runners themselves."""
    await helpers.stop_background_runner(platform.runtime)
    return platform


def _runner(platform: Platform, chunk_size: int = 50, **settings: Any) -> CampaignRunner:
    runtime = platform.runtime
    return CampaignRunner(
        runtime.sessionmaker,
        runtime.queue,
        runtime.settings.model_copy(update=settings),
        chunk_size=chunk_size,
        read_sessionmaker=runtime.read_sessionmaker,
    )


async def _drive(runner: CampaignRunner, platform: Platform, key: str = "autumn") -> None:
    """Tick as the background loop does until the campaign is over."""
    while (await helpers.campaign(platform.runtime, key)).status in {"running", "scheduled"}:
        wait = await runner.tick()
        await asyncio.sleep(0.05 if wait is None else wait)


async def _assignments(platform: Platform) -> dict[str, str]:
    async with platform.runtime.sessionmaker() as session:
        rows = await session.execute(select(Assignment.customer_id, Assignment.variant))
        return dict(rows.all())


async def test_background_loop_completes_with_the_right_counts(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        ids = await helpers.setup(platform, client, 300)
        refused = ids[::15]  # 20 customers without marketing consent
        await helpers.deny_marketing(platform.runtime, refused)
        await helpers.create(client, respect_quiet_hours=False)
        await helpers.start(client)
        deadline = time.monotonic() + 30
        while (body := (await client.get("/v1/campaigns/autumn")).json())["status"] != "completed":
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
    assert body["audience"] == 300
    assert (body["processed"], body["sent"], body["skipped"], body["held_out"]) == (300, 280, 20, 0)
    assert body["percent"] == 100.0
    assert body["finished_at"] is not None
    assert "accepts no marketing messages" in body["last_error"]
    sent = await helpers.messages(platform.runtime)
    assert sorted(m.customer_id for m in sent) == sorted(set(ids) - set(refused))
    assert {m.campaign_id for m in sent} == {body["id"]}
    assert {m.owner for m in sent} == {"campaign:autumn"}
    assert {m.experiment_id for m in sent} == {None}
    assert sent[0].content["sms"]["body"].startswith("【示例银行】稳健理财限时发售")


async def test_experiment_split_holdout_and_chunks(
    manual: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = manual
    experiment = await helpers.add_experiment(platform.runtime)
    async with platform.client("marketer") as client:
        ids = await helpers.setup(platform, client, 300)
        created = await helpers.create(client, experiment="channels", respect_quiet_hours=False)
        await helpers.start(client)
    chunks: list[int] = []
    original = repository.chunk

    async def counted(*args: Any, **kwargs: Any) -> list[repository.Member]:
        found = await original(*args, **kwargs)
        chunks.append(len(found))
        return found

    monkeypatch.setattr(repository, "chunk", counted)
    await _drive(_runner(platform, chunk_size=64), platform)
    assert chunks == [64, 64, 64, 64, 44]  # the audience is read a chunk at a time
    variants = [Variant(v["key"], v["weight"]) for v in helpers.VARIANTS]
    expected = {
        cid: v
        for cid in ids
        if (v := assign(salt="channels-salt", customer_id=cid, variants=variants, coverage=0.5))
    }
    assert await _assignments(platform) == expected
    messages = {m.customer_id: m for m in await helpers.messages(platform.runtime)}
    assert set(messages) == {c for c, v in expected.items() if v != "holdout"}
    for cid, message in messages.items():
        variant = expected[cid]
        assert (message.experiment_id, message.variant) == (experiment.id, variant)
        assert message.campaign_id == created["id"]
        channel = "sms" if variant == "sms_a" else "email"
        assert message.channels == [channel]
        template = "wealth_offer.sms" if channel == "sms" else "promo_b.email"
        assert message.decision["templates"][channel]["key"] == template
    if messages:
        email = next(m for m in messages.values() if m.channel == "email")
        assert email.content["email"]["subject"] == "B 稳健理财"
    counts = Counter(expected.values())
    final = await helpers.campaign(platform.runtime)
    assert (final.status, final.processed, final.held_out) == ("completed", 300, counts["holdout"])
    assert final.sent == counts["sms_a"] + counts["email_b"] == len(messages)
    assert 100 < len(expected) < 200  # coverage 0.5 of 300


async def test_sample_size_and_fraction(manual: Platform) -> None:
    platform = manual
    await helpers.add_experiment(platform.runtime, sample_size=40, coverage=1.0)
    async with platform.client("marketer") as client:
        ids = await helpers.setup(platform, client, 200)
        await helpers.create(client, experiment="channels", respect_quiet_hours=False)
        await helpers.start(client)
        await helpers.create(client, key="sampled", sample_fraction=0.3, respect_quiet_hours=False)
        await helpers.start(client, "sampled")
    await _drive(_runner(platform, chunk_size=30), platform)
    await _drive(_runner(platform, chunk_size=30), platform, "sampled")
    assert len(await _assignments(platform)) == 40
    sampled = [
        m.customer_id
        for m in await helpers.messages(platform.runtime)
        if m.owner == "campaign:sampled"
    ]
    only = [Variant("in", 1.0)]
    expected = [
        c for c in ids if assign(salt="sampled", customer_id=c, variants=only, coverage=0.3)
    ]
    assert sorted(sampled) == expected
    assert (await helpers.campaign(platform.runtime, "sampled")).sent == len(expected)


async def test_crash_mid_chunk_and_a_new_runner(
    manual: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = manual
    async with platform.client("marketer") as client:
        ids = await helpers.setup(platform, client, 120)
        await helpers.create(client, respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
    first = _runner(platform)
    assert await first.run_chunk(campaign_id) == 50

    async def crash(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("the process died before its commit")

    monkeypatch.setattr(repository, "advance", crash)
    with pytest.raises(ConnectionError):
        await first.run_chunk(campaign_id)  # the second chunk's messages were written: rolled back
    monkeypatch.undo()
    assert await helpers.message_count(platform.runtime) == 50
    del first
    await _drive(_runner(platform), platform)
    messages = await helpers.messages(platform.runtime)
    assert sorted(m.customer_id for m in messages) == ids
    final = await helpers.campaign(platform.runtime)
    assert (final.status, final.processed, final.sent, final.skipped) == ("completed", 120, 120, 0)


async def test_pause_resume_cancel(manual: Platform) -> None:
    platform = manual
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 150)
        await helpers.create(client, respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
        runner = _runner(platform)
        assert await runner.run_chunk(campaign_id) == 50
        assert (await client.post("/v1/campaigns/autumn/pause")).status_code == 200
        assert await runner.run_chunk(campaign_id) is None
        assert await runner.tick() is None  # nothing due
        paused = (await client.get("/v1/campaigns/autumn")).json()
        assert (paused["status"], paused["processed"], paused["percent"]) == ("paused", 50, 33.33)
        assert (await client.post("/v1/campaigns/autumn/resume")).status_code == 200
        assert await runner.run_chunk(campaign_id) == 50
        assert (await client.post("/v1/campaigns/autumn/cancel")).status_code == 200
        assert await runner.run_chunk(campaign_id) is None
        final = (await client.get("/v1/campaigns/autumn")).json()
    assert (final["status"], final["processed"], final["sent"]) == ("cancelled", 100, 100)
    assert await helpers.message_count(platform.runtime) == 100


async def test_concurrent_runners_never_duplicate(manual: Platform) -> None:
    platform = manual
    await helpers.add_experiment(platform.runtime)
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 200)
        await helpers.create(client, experiment="channels", respect_quiet_hours=False)
        await helpers.start(client)
    runners = [_runner(platform, chunk_size=20) for _ in range(3)]
    await asyncio.gather(*(_drive(r, platform) for r in runners))
    messages = await helpers.messages(platform.runtime)
    customers = [m.customer_id for m in messages]
    assert len(customers) == len(set(customers))
    final = await helpers.campaign(platform.runtime)
    assert (final.status, final.processed, final.sent) == ("completed", 200, len(messages))
    assigned = await _assignments(platform)
    assert final.held_out == sum(1 for v in assigned.values() if v == "holdout")
    assert final.sent + final.held_out == len(assigned)


def test_quiet_until() -> None:
    window = HourWindow(*(datetime.strptime(t, "%H:%M").time() for t in ("21:00", "08:00")))
    late = datetime.fromisoformat("2026-11-23T23:30:00+08:00")
    assert quiet_until(late, window, "Asia/Shanghai") == datetime.fromisoformat(
        "2026-11-24T08:00:00+08:00"
    )
    early = datetime.fromisoformat("2026-11-23T02:00:00+08:00")
    assert quiet_until(early, window, None) == datetime.fromisoformat("2026-11-23T08:00:00+08:00")
    assert quiet_until(early, window, "Europe/London") is None  # 18:00 in London


async def test_quiet_hours_defer_to_the_end_of_the_window(manual: Platform) -> None:
    platform = manual
    local = utcnow().astimezone(helpers.SHANGHAI)
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    quiet = MarketingSettings(
        quiet_hours_start=start.strftime("%H:%M"), quiet_hours_end=end.strftime("%H:%M")
    )
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 3)
        await helpers.add_customers(platform.runtime, ["D00001"], timezone="America/Bogota")
        await helpers.create(client)
        await helpers.start(client)
    await _drive(_runner(platform, marketing=quiet), platform)
    messages = {m.customer_id: m for m in await helpers.messages(platform.runtime)}
    assert len(messages) == 4
    due = end.replace(second=0, microsecond=0)
    for cid in ("C00000", "C00001", "C00002"):
        assert messages[cid].send_at == due
        assert messages[cid].status == "scheduled"
    assert messages["D00001"].send_at is None  # 13 hours behind: outside the window


async def test_rate_limit_holds_for_two_runners_together(manual: Platform) -> None:
    """rate 50/s over 100 customers: two runners (each with its own pace, as in two
    processes) never create more than 50 messages within one second."""
    platform = manual
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 100)
        await helpers.create(client, rate_per_second=50, respect_quiet_hours=False)
        await helpers.start(client)
    began = time.monotonic()
    runners = [_runner(platform, chunk_size=500) for _ in "ab"]
    await asyncio.gather(*(_drive(r, platform) for r in runners))
    assert time.monotonic() - began >= 1.5
    created = sorted(m.created_at for m in await helpers.messages(platform.runtime))
    assert len(created) == 100
    # any 51 messages span a second (less the few ms between the count and the insert)
    assert all(created[i + 50] - created[i] >= timedelta(seconds=0.95) for i in range(50))


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_two_runners_on_one_chunk_one_commits(
    manual: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the same cursor; the compare-and-set lets one commit, the other rolls back.
    (PostgreSQL only: SQLite's one writer connection runs chunks one after the other.)"""
    platform = manual
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 60)
        await helpers.create(client, respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
    barrier = asyncio.Barrier(2)
    original = repository.chunk

    async def together(*args: Any, **kwargs: Any) -> list[repository.Member]:
        found = await original(*args, **kwargs)
        await barrier.wait()
        return found

    monkeypatch.setattr(repository, "chunk", together)
    results = await asyncio.gather(*(_runner(platform).run_chunk(campaign_id) for _ in "ab"))
    assert sorted(results, key=str) == [50, None]
    assert await helpers.message_count(platform.runtime) == 50
    state = await helpers.campaign(platform.runtime)
    assert (state.processed, state.sent) == (50, 50)


async def test_scheduled_campaign_starts_at_its_time(manual: Platform) -> None:
    platform = manual
    starts_at = utcnow() + timedelta(seconds=1)
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 10)
        await helpers.create(client, starts_at=starts_at.isoformat(), respect_quiet_hours=False)
        assert (await helpers.start(client))["status"] == "scheduled"
    runner = _runner(platform)
    assert await runner.tick() is None  # not yet
    assert await helpers.message_count(platform.runtime) == 0
    await _drive(runner, platform)
    state = await helpers.campaign(platform.runtime)
    assert state.status == "completed"
    assert state.started_at is not None
    assert state.started_at >= starts_at.replace(microsecond=0)
    assert (state.audience, state.sent) == (10, 10)


async def test_a_stopped_experiment_pauses_the_campaign(manual: Platform) -> None:
    platform = manual
    experiment = await helpers.add_experiment(platform.runtime, coverage=1.0)
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 100)
        await helpers.create(client, experiment="channels", respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
    runner = _runner(platform)
    assert await runner.run_chunk(campaign_id) is not None
    async with platform.runtime.sessionmaker() as session:
        row = await session.get(Experiment, experiment.id)
        assert row is not None
        row.status = "stopped"
        await session.commit()
    assert await runner.run_chunk(campaign_id) is None
    state = await helpers.campaign(platform.runtime)
    assert (state.status, state.processed) == ("paused", 50)
    assert state.last_error == "experiment 'channels' is stopped, not running"


async def test_a_winner_takes_the_rest_of_the_audience(manual: Platform) -> None:
    platform = manual
    experiment = await helpers.add_experiment(platform.runtime, coverage=1.0)
    async with platform.client("marketer") as client:
        ids = await helpers.setup(platform, client, 80)
        await helpers.create(client, experiment="channels", respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
    runner = _runner(platform)
    assert await runner.run_chunk(campaign_id) is not None
    async with platform.runtime.sessionmaker() as session:
        row = await session.get(Experiment, experiment.id)
        assert row is not None
        row.status, row.winner = "completed", "email_b"
        await session.commit()
    assigned = await _assignments(platform)
    await _drive(runner, platform)
    later = [m for m in await helpers.messages(platform.runtime) if m.customer_id in ids[50:]]
    assert len(later) == 30
    # the winner's channel, outside the experiment's counts: no arm, no new assignment
    assert {(m.channel, m.experiment_id, m.variant) for m in later} == {("email", None, None)}
    assert await _assignments(platform) == assigned
    assert (await helpers.campaign(platform.runtime)).status == "completed"
    async with platform.client("analyst") as client:
        report = (await client.get("/v1/experiments/channels/report")).json()
    assert report["srm"]["mismatch"] is False


# an erasure can land between the audience's read and the chunk's commit only beside
# another writer: on PostgreSQL (a SQLite file has one writer at a time)
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_member_erased_during_a_chunk_gets_nothing(
    manual: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member erased after the chunk read the audience gets no message and no assignment
    under their id: nothing of theirs is written after their erasure."""
    platform = manual
    await helpers.add_experiment(platform.runtime)
    async with platform.client("marketer") as client:
        ids = await helpers.setup(platform, client, 40)
        await helpers.create(client, experiment="channels", respect_quiet_hours=False)
        await helpers.start(client)
    variants = [Variant(v["key"], v["weight"]) for v in helpers.VARIANTS]
    sampled = [
        c
        for c in ids
        if assign(salt="channels-salt", customer_id=c, variants=variants, coverage=0.5)
    ]
    erased = sampled[0]  # would get an assignment, and maybe a message
    original = repository.chunk

    async def erasing_meanwhile(*args: Any, **kwargs: Any) -> list[repository.Member]:
        found = await original(*args, **kwargs)
        if any(m.id == erased for m in found):
            async with platform.runtime.sessionmaker() as session:
                await erasure.begin(session, erased)
                await session.commit()
                await erasure.erase(session, erased)
                await session.commit()
        return found

    monkeypatch.setattr(repository, "chunk", erasing_meanwhile)
    await _drive(_runner(platform, chunk_size=64), platform)
    assert erased not in await _assignments(platform)
    assert erased not in {m.customer_id for m in await helpers.messages(platform.runtime)}
    final = await helpers.campaign(platform.runtime)
    assert (final.status, final.processed) == ("completed", 40)
    assert final.skipped >= 1


async def test_a_chunk_holds_its_customers_once(manual: Platform) -> None:
    """The runner holds the chunk's erasure buckets and reads the erasure markers itself;
    accepting the chunk's messages does not take them a second time (PostgreSQL: one lock
    statement and one marker read per chunk; SQLite takes none)."""
    platform = manual
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 20)
        await helpers.create(client, respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
    engine = platform.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert await _runner(platform).run_chunk(campaign_id) == 20
    finally:
        event.remove(engine, "before_cursor_execute", record)
    shared_locks = [s for s in statements if "pg_advisory_xact_lock_shared" in s]
    markers = [s for s in statements if "FROM customer_erasures" in s]
    expected = 1 if platform.backend == "postgres" else 0
    assert (len(shared_locks), len(markers)) == (expected, expected), statements
