"""Campaign states found wanting by an audit: a scheduled campaign paused and resumed waits
for its start, a scenario made transactional mid-run pauses the campaign (its sends are
checked against marketing consent), and a throttled chunk waits instead of failing."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest

from app.timeutil import utcnow
from tests.campaigns import helpers
from tests.campaigns.test_campaign_runner import _runner
from tests.campaigns.test_campaign_runner import manual as manual  # the fixture
from tests.conftest import Platform


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_scheduled_campaign_paused_and_resumed_waits_for_its_start(
    manual: Platform,
) -> None:
    platform = manual
    starts_at = utcnow() + timedelta(days=7)
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 10)
        await helpers.create(client, starts_at=starts_at.isoformat(), respect_quiet_hours=False)
        assert (await helpers.start(client))["status"] == "scheduled"
        assert (await client.post("/v1/campaigns/autumn/pause")).json()["status"] == "paused"
        resumed = (await client.post("/v1/campaigns/autumn/resume")).json()
    assert resumed["status"] == "scheduled"
    assert resumed["started_at"] is None
    await _runner(platform).tick()
    assert await helpers.message_count(platform.runtime) == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_scenario_made_transactional_mid_run_pauses_the_campaign(
    manual: Platform,
) -> None:
    platform = manual
    async with platform.client("marketer") as client:
        ids = await helpers.setup(platform, client, 100)
        refused = ids[::10]  # opted out of marketing
        await helpers.deny_marketing(platform.runtime, refused)
        await helpers.create(client, respect_quiet_hours=False)
        campaign_id = (await helpers.start(client))["id"]
        runner = _runner(platform, chunk_size=50)
        await runner.run_chunk(campaign_id)
        body = {**helpers.MARKETING, "class": "transactional"}
        body.pop("key")
        assert (await client.put("/v1/scenarios/wealth_offer", json=body)).status_code == 200
        await runner.run_chunk(campaign_id)
    campaign = await helpers.campaign(platform.runtime)
    assert campaign.status == "paused"
    assert "is transactional now" in (campaign.last_error or "")
    got = {m.customer_id for m in await helpers.messages(platform.runtime)}
    assert got
    assert not set(refused) & got


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_a_throttled_campaign_waits_for_its_rate_without_failing(
    manual: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """200 customers at 50/s, ticked as run_forever ticks: about 4 s, and no chunk fails
    (a throttled chunk read its rate from a row its rollback had expired)."""
    platform = manual
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 200)
        await helpers.create(client, rate_per_second=50, respect_quiet_hours=False)
        await helpers.start(client)
    runner = _runner(platform, chunk_size=500)
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="icc.campaigns"):
        while (await helpers.campaign(platform.runtime)).status == "running":
            wait = await runner.tick()
            await asyncio.sleep(1.0 if wait is None else min(wait, 1.0))
    assert not [r for r in caplog.records if "chunk failed" in r.getMessage()]
    assert time.monotonic() - began < 7.5
    assert await helpers.message_count(platform.runtime) == 200
