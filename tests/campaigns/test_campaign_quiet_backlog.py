"""A throttled campaign in quiet hours: its deferred messages are released at its rate, and a
cancel stops the messages that have not gone, on both databases."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from app.campaigns import repository
from app.campaigns.models import Campaign
from app.campaigns.repository import Member
from app.campaigns.runner import CampaignRunner, _send_at, _Setup, backlog_wait
from app.messages.models import MessageEvent, Outbox
from app.settings import MarketingSettings
from app.timeutil import utcnow
from strategies.decide import HourWindow
from tests.campaigns import helpers
from tests.conftest import Platform

NOW = datetime.fromisoformat("2026-11-23T23:30:00+08:00")
NIGHT = HourWindow(*(datetime.strptime(t, "%H:%M").time() for t in ("21:00", "08:00")))
MORNING = datetime.fromisoformat("2026-11-24T08:00:00+08:00")
SHANGHAI = Member("C1", "Asia/Shanghai")
SHANGHAI_ZONE = ZoneInfo("Asia/Shanghai")
LONDON = Member("C2", "Europe/London")  # 15:30 there at NOW: outside the window


def _setup(
    rate: float | None, *, quiet: HourWindow | None = NIGHT, release_at: datetime | None = None
) -> _Setup:
    campaign = Campaign(rate_per_second=rate)
    return _Setup(campaign, {}, None, None, None, None, quiet, NOW, release_at=release_at)


def test_without_a_rate_the_window_end_is_the_time() -> None:
    setup = _setup(None)
    assert [_send_at(setup, SHANGHAI) for _ in range(3)] == [MORNING] * 3
    assert _send_at(setup, LONDON) is None
    assert setup.release_at is None


def test_deferred_messages_are_spaced_by_the_rate() -> None:
    setup = _setup(0.5)
    times = [_send_at(setup, SHANGHAI) for _ in range(3)]
    step = timedelta(seconds=2)
    assert times == [MORNING, MORNING + step, MORNING + 2 * step]
    assert (setup.release_from, setup.release_at) == (MORNING, MORNING + 3 * step)
    # a customer outside the window goes now while the backlog waits for the morning
    assert _send_at(setup, LONDON) is None


def test_a_customer_whose_window_ends_at_another_time_is_not_held_behind_the_backlog() -> None:
    setup = _setup(0.5)
    _send_at(setup, SHANGHAI)
    new_york = Member("C3", "America/New_York")  # 10:30 there: outside the window
    tokyo = Member("C4", "Asia/Tokyo")  # 00:30 there: quiet until 08:00 Tokyo
    assert _send_at(setup, new_york) is None
    assert _send_at(setup, tokyo) == datetime.fromisoformat("2026-11-24T08:00:00+09:00")
    assert setup.release_at == MORNING + timedelta(seconds=2)


def test_the_runner_makes_nothing_while_a_backlog_is_released() -> None:
    campaign = Campaign(rate_per_second=0.5)
    campaign.release_from, campaign.release_at = MORNING, MORNING + timedelta(seconds=6)
    assert backlog_wait(campaign, NOW) == 0.0  # the night: customers are still gone through
    assert backlog_wait(campaign, MORNING + timedelta(seconds=0.5)) == 5.5
    assert backlog_wait(campaign, MORNING + timedelta(seconds=6)) == 0.0
    assert backlog_wait(Campaign(rate_per_second=0.5), MORNING) == 0.0


def test_a_night_and_a_day_of_a_throttled_campaign_keep_the_rate_and_the_night() -> None:
    """The runner as it goes (a chunk a message, its pause while a backlog is released) for
    30 hours from 21:00: no message goes in quiet hours, and no two closer than the rate."""
    rate, quiet = 0.01, NIGHT
    campaign = Campaign(rate_per_second=rate)
    now = datetime.fromisoformat("2026-11-23T21:00:00+08:00")
    sent = []
    while now < datetime.fromisoformat("2026-11-25T03:00:00+08:00"):
        wait = backlog_wait(campaign, now)
        if wait > 0:
            now += timedelta(seconds=wait)
            continue
        setup = _Setup(
            campaign, {}, None, None, None, None, quiet, now,
            release_from=campaign.release_from, release_at=campaign.release_at,
        )  # fmt: skip
        sent.append(_send_at(setup, SHANGHAI) or now)
        campaign.release_from, campaign.release_at = setup.release_from, setup.release_at
        now += timedelta(seconds=1 / rate)
    sent.sort()
    assert len(sent) > 600
    assert not any(quiet.contains(t.astimezone(SHANGHAI_ZONE).time()) for t in sent)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= timedelta(seconds=1 / rate) - timedelta(microseconds=1)


@pytest.fixture
async def manual(platform: Platform) -> Platform:
    await helpers.stop_background_runner(platform.runtime)
    return platform


def _quiet_now() -> tuple[MarketingSettings, datetime]:
    """Quiet hours around now in Shanghai, and their end."""
    local = utcnow().astimezone(helpers.SHANGHAI)
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    settings = MarketingSettings(
        quiet_hours_start=start.strftime("%H:%M"), quiet_hours_end=end.strftime("%H:%M")
    )
    return settings, end.replace(second=0, microsecond=0)


async def _run(platform: Platform, **body: Any) -> datetime:
    """A campaign of 30 customers in their quiet hours, run to its end; the window's end."""
    quiet, end = _quiet_now()
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 30)
        await helpers.create(client, **body)
        await helpers.start(client)
    runtime = platform.runtime
    runner = CampaignRunner(
        runtime.sessionmaker,
        runtime.queue,
        runtime.settings.model_copy(update={"marketing": quiet}),
        chunk_size=12,
        read_sessionmaker=runtime.read_sessionmaker,
    )
    while (await helpers.campaign(runtime)).status == "running":
        wait = await runner.tick()
        await asyncio.sleep(0.01 if wait is None else wait)
    return end


async def test_quiet_hours_backlog_is_released_at_the_campaign_rate(manual: Platform) -> None:
    end = await _run(manual, rate_per_second=20)
    messages = await helpers.messages(manual.runtime)
    assert len(messages) == 30
    assert {m.status for m in messages} == {"scheduled"}
    step = timedelta(seconds=0.05)
    # across chunks (12 customers each), the spacing goes on from the stored release time
    assert [m.send_at for m in messages] == [end + i * step for i in range(30)]
    campaign = await helpers.campaign(manual.runtime)
    assert (campaign.release_from, campaign.release_at) == (end, end + 30 * step)


async def test_cancel_stops_the_messages_waiting_for_the_window_end(manual: Platform) -> None:
    platform = manual
    await _run(platform)
    async with platform.client("marketer") as client:
        assert (await client.get("/v1/campaigns/autumn")).json()["status"] == "completed"
        cancelled = await client.post("/v1/campaigns/autumn/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert (body["status"], body["sent"], body["cancelled"]) == ("cancelled", 30, 30)
        again = await client.post("/v1/campaigns/autumn/cancel")
        assert again.status_code == 409
        assert again.json()["detail"] == "campaign 'autumn' is cancelled already"
    messages = await helpers.messages(platform.runtime)
    reason = "cancelled: the campaign was cancelled"
    assert {(m.status, m.status_reason) for m in messages} == {("failed", reason)}
    async with platform.runtime.sessionmaker() as session:
        assert list(await session.scalars(select(Outbox.message_id))) == []
        events = await session.scalars(
            select(MessageEvent.detail).where(
                MessageEvent.message_id == messages[0].id, MessageEvent.type == "failed"
            )
        )
        assert list(events) == [{"reason": reason}]


async def test_a_completed_campaign_whose_messages_went_cannot_be_cancelled(
    manual: Platform,
) -> None:
    platform = manual
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 5)
        await helpers.create(client, respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
        runtime = platform.runtime
        runner = CampaignRunner(
            runtime.sessionmaker, runtime.queue, runtime.settings, chunk_size=10
        )
        assert await runner.run_chunk(campaign_id) == 5
        deadline = time.monotonic() + 20
        while not {m.status for m in await helpers.messages(runtime)} <= {"sent", "delivered"}:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        refused = await client.post("/v1/campaigns/autumn/cancel")
        assert refused.status_code == 409
        assert "all its messages have gone" in refused.json()["detail"]
        state = (await client.get("/v1/campaigns/autumn")).json()
    assert (state["status"], state["cancelled"]) == ("completed", 0)


async def test_a_cancel_that_meets_the_last_chunk_stops_the_waiting_messages(
    manual: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner completes the campaign between the cancel's read (running) and its
    compare-and-set: the cancel goes on from `completed` and stops the messages waiting for
    the window's end, instead of answering 409 and needing a second cancel."""
    platform = manual
    await _run(platform)
    async with platform.runtime.sessionmaker() as session:
        await session.execute(update(Campaign).values(status="running", finished_at=None))
        await session.commit()
    real = repository.set_status
    raced: list[str] = []

    async def runner_first(
        session: Any, campaign_id: str, old: str, new: str, **values: Any
    ) -> bool:
        if new == "cancelled" and old == "running" and not raced:
            raced.append(old)  # the runner's last chunk, committed just before
            await real(session, campaign_id, "running", "completed", finished_at=utcnow())
        return await real(session, campaign_id, old, new, **values)

    monkeypatch.setattr(repository, "set_status", runner_first)
    async with platform.client("marketer") as client:
        cancelled = await client.post("/v1/campaigns/autumn/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert raced == ["running"]
    body = cancelled.json()
    assert (body["status"], body["cancelled"]) == ("cancelled", 30)
    assert {m.status for m in await helpers.messages(platform.runtime)} == {"failed"}
