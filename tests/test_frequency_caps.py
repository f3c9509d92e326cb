"""Frequency caps on the send path: every patch a customer receives counts, those of the
same group of sends (a batch, single sends accepted together) and those sharing a time, each
by when it reaches the customer (a scheduled one: at its send time)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Platform
from tests.test_strategies_api import _outside_quiet_hours, _send, _setup

VARS = {"account_tail": "1234", "amount": "1200.00"}


async def _cap_wealth(platform: Platform, max_patches: int) -> None:
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        current = (await client.get("/v1/strategies/wealth")).json()
        body = {
            k: v for k, v in current.items() if k not in ("id", "key", "created_at", "updated_at")
        }
        body["frequency_cap"] = {"max_patches": max_patches, "days": 7}
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
