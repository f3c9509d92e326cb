"""/v1/campaigns: validation of references and variables, roles, and the lifecycle."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from app.timeutil import utcnow
from tests.campaigns import helpers
from tests.conftest import Platform


@pytest.fixture
async def api(platform: Platform) -> Platform:
    """The platform without its campaign loop: lifecycle steps are not raced by a runner."""
    await helpers.stop_background_runner(platform.runtime)
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 5)
    return platform


async def _refused(platform: Platform, body: dict[str, Any], status: int, field: str) -> str:
    payload = {"key": "bad", "scenario": "wealth_offer", "segment": "promo"}
    payload |= {"variables": helpers.VARIABLES} | body
    async with platform.client("marketer") as client:
        response = await client.post("/v1/campaigns", json=payload)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"] == ("ValidationError" if status == 422 else "Conflict")
    assert field in error["detail"], error
    detail: str = error["detail"]
    return detail


async def test_create_validates_references_and_variables(api: Platform) -> None:
    await api.create_scenario()  # account_movement: transactional
    await helpers.add_experiment(api.runtime, "patchy", kind="patch")
    await helpers.add_experiment(api.runtime, "other_segment", segment="elsewhere")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"scenario": "nope"}, "no scenario 'nope'"),
        ({"scenario": "account_movement"}, "is transactional"),
        ({"segment": "nope"}, "no segment 'nope'"),
        ({"template": "missing.sms"}, "no template 'missing.sms'"),
        ({"experiment": "missing"}, "no experiment 'missing'"),
        ({"experiment": "patchy"}, "patch experiment"),
        ({"experiment": "other_segment"}, "samples segment 'elsewhere'"),
        ({"variables": {}}, "variables.product"),
        ({"variables": {"product": 12}}, "variables.product"),
        ({"sample_fraction": 0}, "sample_fraction"),
        ({"sample_fraction": 1.5}, "sample_fraction"),
        ({"rate_per_second": 0}, "rate_per_second"),
        ({"starts_at": "2026-10-01T09:00:00"}, "starts_at"),
        ({"key": "Bad Key"}, "key"),
        ({"unknown": 1}, "unknown"),
    ]
    for body, message in cases:
        await _refused(api, body, 422, message)


async def test_create_read_patch_and_roles(api: Platform) -> None:
    await helpers.add_experiment(api.runtime)
    async with api.client("marketer") as client:
        created = await helpers.create(
            client, name="秋季", template="promo_b.email", experiment="channels", rate_per_second=5
        )
        assert created["status"] == "draft"
        assert created["respect_quiet_hours"] is True
        assert (created["processed"], created["sent"], created["percent"]) == (0, 0, 0.0)
        await _refused(api, {"key": "autumn"}, 409, "already exists")
        changed = await client.patch("/v1/campaigns/autumn", json={"sample_fraction": 0.25})
        assert changed.status_code == 200, changed.text
        assert changed.json()["sample_fraction"] == 0.25
        assert changed.json()["template"] == "promo_b.email"  # not given: unchanged
        bad = await client.patch("/v1/campaigns/autumn", json={"segment": "nope"})
        assert bad.status_code == 422, bad.text
        null = await client.patch("/v1/campaigns/autumn", json={"variables": None})
        assert null.status_code == 422, null.text
        missing = await client.get("/v1/campaigns/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == "NotFound"
    async with api.client("analyst") as client:
        listed = await client.get("/v1/campaigns", params={"limit": 1})
        assert listed.status_code == 200, listed.text
        assert [c["key"] for c in listed.json()["items"]] == ["autumn"]
        assert (await client.get("/v1/campaigns/autumn")).json()["name"] == "秋季"
        denied = await client.post("/v1/campaigns/autumn/start")
        assert denied.status_code == 403
    async with api.client("system") as client:
        assert (await client.get("/v1/campaigns")).status_code == 403


async def test_lifecycle_and_wrong_transitions(api: Platform) -> None:
    async with api.client("marketer") as client:
        await helpers.create(client)
        for action in ("pause", "resume"):
            wrong = await client.post(f"/v1/campaigns/autumn/{action}")
            assert wrong.status_code == 409, wrong.text
            assert "is draft" in wrong.json()["detail"]
        started = await helpers.start(client)
        assert started["status"] == "running"
        assert started["audience"] == 5
        assert started["started_at"] is not None
        again = await client.post("/v1/campaigns/autumn/start")
        assert again.status_code == 409
        assert "is running" in again.json()["detail"]
        patched = await client.patch("/v1/campaigns/autumn", json={"name": "x"})
        assert patched.status_code == 409
        assert "is running" in patched.json()["detail"]
        paused = await client.post("/v1/campaigns/autumn/pause")
        assert paused.json()["status"] == "paused"
        assert (await client.post("/v1/campaigns/autumn/pause")).status_code == 409
        resumed = await client.post("/v1/campaigns/autumn/resume")
        assert resumed.json()["status"] == "running"
        cancelled = await client.post("/v1/campaigns/autumn/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["finished_at"] is not None
        final = await client.post("/v1/campaigns/autumn/cancel")
        assert final.status_code == 409
        assert "is cancelled" in final.json()["detail"]
        assert (await client.post("/v1/campaigns/autumn/resume")).status_code == 409


async def test_future_start_is_scheduled_and_experiment_must_run(api: Platform) -> None:
    await helpers.add_experiment(api.runtime, "drafted", status="draft")
    later = (utcnow() + timedelta(hours=1)).isoformat()
    async with api.client("marketer") as client:
        await helpers.create(client, starts_at=later)
        scheduled = await helpers.start(client)
        assert scheduled["status"] == "scheduled"
        assert scheduled["started_at"] is None
        paused = await client.post("/v1/campaigns/autumn/pause")
        assert paused.json()["status"] == "paused"
        await helpers.create(client, key="tested", experiment="drafted")
        refused = await client.post("/v1/campaigns/tested/start")
        assert refused.status_code == 409, refused.text
        assert "experiment 'drafted' is draft" in refused.json()["detail"]
        assert (await client.post("/v1/campaigns/tested/cancel")).status_code == 200


async def test_the_segment_of_an_unfinished_campaign_cannot_be_deleted(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await helpers.setup(platform, client, 2)
        await helpers.create(client)
        refused = await client.delete(f"/v1/segments/{helpers.SEGMENT}")
        assert refused.status_code == 409, refused.text
        assert "campaigns autumn" in refused.json()["detail"]
        assert (await client.post("/v1/campaigns/autumn/cancel")).status_code == 200
        assert (await client.delete(f"/v1/segments/{helpers.SEGMENT}")).status_code == 204
