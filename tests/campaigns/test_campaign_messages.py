"""A campaign's messages through the message API, on both databases: each names its campaign,
experiment (id and key) and variant, and the list filters by campaign and experiment."""

from __future__ import annotations

import asyncio
from datetime import datetime

from tests.campaigns import helpers
from tests.campaigns.test_campaign_runner import _runner
from tests.conftest import Platform


async def test_campaign_messages_name_their_campaign_and_variant(platform: Platform) -> None:
    await helpers.stop_background_runner(platform.runtime)
    experiment = await helpers.add_experiment(platform.runtime)
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 120)
        created = await helpers.create(client, experiment="channels", respect_quiet_hours=False)
        await helpers.start(client)
    runner = _runner(platform, chunk_size=200)
    while (await helpers.campaign(platform.runtime)).status == "running":
        await runner.tick()
        await asyncio.sleep(0.05)
    stored = {m.id: m for m in await helpers.messages(platform.runtime)}
    assert stored
    async with platform.client("analyst") as reader:
        by_campaign = await reader.get(
            "/v1/messages", params={"campaign_id": created["id"], "limit": 500}
        )
        by_experiment = await reader.get(
            "/v1/messages", params={"experiment_id": experiment.id, "limit": 500}
        )
        one = (await reader.get(f"/v1/messages/{next(iter(stored))}")).json()
    items = by_campaign.json()["items"]
    assert [m["id"] for m in items] == sorted(stored, reverse=True)
    assert [m["id"] for m in by_experiment.json()["items"]] == [m["id"] for m in items]
    for item in [*items, one]:
        message = stored[item["id"]]
        assert item["campaign_id"] == created["id"]
        assert (item["experiment_id"], item["experiment"]) == (experiment.id, "channels")
        assert item["variant"] == message.variant
        assert item["opened_at"] is None
        assert item["clicked_at"] is None
        assert datetime.fromisoformat(item["created_at"]).utcoffset() is not None
