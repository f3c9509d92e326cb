"""`/v1/experiments` on both databases: validation, roles, lifecycle, frozen variants, lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import update

from app.experiments.models import Experiment
from tests.conftest import Platform
from tests.experiments.setup import patch_experiment, setup

CAMPAIGN: dict[str, Any] = {
    "key": "channel_test",
    "kind": "campaign",
    "segment": "low_net_worth",
    "variants": [
        {"key": "sms", "weight": 1, "channel": "sms", "template": "loan_patch.sms"},
        {"key": "email", "weight": 1, "channel": "email", "template": "wealth_mail"},
    ],
}
VARIANTS: list[dict[str, Any]] = patch_experiment()["variants"]


async def test_create_with_defaults_and_read_back(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await setup(platform, client)
        created = await client.post("/v1/experiments", json=patch_experiment())
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["status"] == "draft"
        assert body["id"].startswith("exp_")
        assert body["control"] == "holdout"  # the holdout when there is one
        assert body["salt"] == "wealth_copy"
        assert (body["coverage"], body["metric"], body["attribution_hours"]) == (
            1.0,
            "converted",
            72,
        )
        assert (body["confidence"], body["min_sample"], body["target_lift"]) == (0.95, 1000, 0.1)
        assert body["auto_winner"] is False
        assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
        campaign = await client.post("/v1/experiments", json=CAMPAIGN)
        assert campaign.status_code == 201, campaign.text
        assert campaign.json()["control"] == "sms"  # no holdout: the first
        again = await client.post("/v1/experiments", json=patch_experiment())
        assert again.status_code == 409
    async with platform.client("analyst") as client:
        by_key = await client.get("/v1/experiments/wealth_copy")
        assert by_key.status_code == 200
        assert by_key.json() == body
        assert (await client.get(f"/v1/experiments/{body['id']}")).json()["key"] == "wealth_copy"
        assert (await client.get("/v1/experiments/nope")).status_code == 404


def _variants(*changes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**v, **c} for v, c in zip(VARIANTS, changes, strict=False)] + VARIANTS[len(changes) :]


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"segment": "nope"}, "segment"),
    ({"strategy": "nope"}, "strategy"),
    ({"strategy": "loan"}, "strategy"),  # the strategy's segment is low_net_worth
    ({"strategy": None}, "strategy"),
    (
        {"kind": "campaign", "variants": _variants({}, {"channel": "sms"}, {"channel": "sms"})},
        "strategy",
    ),
    ({"variants": _variants({}, {"template": "missing.sms"})}, "variants.1.template"),
    ({"variants": _variants({}, {"template": None})}, "variants.1.template"),
    ({"variants": _variants({}, {"channel": "email"})}, "variants.1.template"),
    ({"variants": _variants({}, {"key": "holdout"})}, "variants.1.key"),
    ({"variants": _variants({}, {"holdout": True, "template": None})}, "variants.1.holdout"),
    ({"variants": _variants({}, {"weight": 0})}, "variants.1.weight"),
    ({"variants": VARIANTS[:1]}, "variants"),
    ({"variants": VARIANTS * 4}, "variants"),
    ({"control": "nope"}, "control"),
    ({"coverage": 0}, "coverage"),
    ({"coverage": 1.5}, "coverage"),
    ({"sample_size": 0}, "sample_size"),
    ({"metric": "opened"}, "metric"),
    ({"attribution_hours": 2161}, "attribution_hours"),
    ({"confidence": 0.5}, "confidence"),
    ({"min_sample": 9}, "min_sample"),
    ({"target_lift": 0}, "target_lift"),
    ({"key": "Bad Key"}, "key"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_invalid_bodies_name_the_field(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await setup(platform, client)
        for change, field in INVALID:
            response = await client.post("/v1/experiments", json=patch_experiment(**change))
            assert response.status_code == 422, (change, response.text)
            body = response.json()
            assert body["error"] == "ValidationError"
            assert body["fields"][0]["field"] == field, (change, body)
        campaign = {**CAMPAIGN, "variants": [{**CAMPAIGN["variants"][0], "channel": None}]}
        campaign["variants"].append(CAMPAIGN["variants"][1])
        response = await client.post("/v1/experiments", json=campaign)
        assert response.json()["fields"][0]["field"] == "variants.0.channel"
        assert (await client.post("/v1/experiments", content=b"{")).status_code == 422


async def test_roles(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await setup(platform, client)
        assert (await client.post("/v1/experiments", json=patch_experiment())).status_code == 201
    async with platform.client(None) as client:
        assert (await client.get("/v1/experiments")).status_code == 401
    async with platform.client("system") as client:
        assert (await client.get("/v1/experiments")).status_code == 403
        assert (await client.get("/v1/experiments/wealth_copy/assignments")).status_code == 403
    async with platform.client("analyst") as client:
        assert (await client.get("/v1/experiments")).status_code == 200
        denied = await client.post("/v1/experiments", json=patch_experiment(key="other"))
        assert denied.status_code == 403
        assert (await client.post("/v1/experiments/wealth_copy/start")).status_code == 403
        assert (await client.patch("/v1/experiments/wealth_copy", json={})).status_code == 403
    async with platform.client("admin") as client:
        assert (await client.post("/v1/experiments/wealth_copy/start")).status_code == 200


async def test_lifecycle_and_frozen_variants(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await setup(platform, client)
        assert (await client.post("/v1/experiments", json=patch_experiment())).status_code == 201
        draft_change = await client.patch(
            "/v1/experiments/wealth_copy", json={"coverage": 0.5, "variants": VARIANTS[1:]}
        )
        assert draft_change.status_code == 200, draft_change.text
        assert draft_change.json()["control"] == "short"  # no holdout left: the first
        bad = await client.patch("/v1/experiments/wealth_copy", json={"segment": "low_net_worth"})
        assert bad.status_code == 422  # the strategy's segment differs
        null = await client.patch("/v1/experiments/wealth_copy", json={"salt": None})
        assert null.status_code == 422
        for action in ("stop", "complete"):
            wrong = await client.post(f"/v1/experiments/wealth_copy/{action}")
            assert wrong.status_code == 409
            assert "draft" in wrong.json()["detail"]
        started = await client.post("/v1/experiments/wealth_copy/start")
        assert started.status_code == 200, started.text
        assert started.json()["status"] == "running"
        assert datetime.fromisoformat(started.json()["started_at"]).utcoffset() is not None
        again = await client.post("/v1/experiments/wealth_copy/start")
        assert again.status_code == 409
        assert "running" in again.json()["detail"]
        for change in ({"variants": VARIANTS}, {"coverage": 1}, {"salt": "x"}, {"weight": 1}):
            frozen = await client.patch("/v1/experiments/wealth_copy", json=change)
            assert frozen.status_code in (409, 422), frozen.text
        same = started.json()
        unchanged = {"variants": same["variants"], "coverage": same["coverage"], "name": "n"}
        resent = await client.patch("/v1/experiments/wealth_copy", json=unchanged)
        assert resent.status_code == 200, resent.text
        frozen = await client.patch("/v1/experiments/wealth_copy", json={"variants": VARIANTS})
        assert frozen.status_code == 409
        assert "variants" in frozen.json()["detail"]
        assert "running" in frozen.json()["detail"]
        live = await client.patch(
            "/v1/experiments/wealth_copy",
            json={"name": "Wealth copy", "auto_winner": True, "min_sample": 50},
        )
        assert live.status_code == 200, live.text
        assert (live.json()["name"], live.json()["auto_winner"]) == ("Wealth copy", True)
        assert (await client.delete("/v1/experiments/wealth_copy")).status_code == 409
        # one running experiment per strategy
        second = patch_experiment(key="wealth_copy_2")
        assert (await client.post("/v1/experiments", json=second)).status_code == 201
        busy = await client.post("/v1/experiments/wealth_copy_2/start")
        assert busy.status_code == 409
        assert "wealth_copy" in busy.json()["detail"]
        assert (await client.delete("/v1/experiments/wealth_copy_2")).status_code == 204
        stopped = await client.post("/v1/experiments/wealth_copy/stop")
        assert stopped.json()["status"] == "stopped"
        assert stopped.json()["stopped_at"] is not None
        unknown = await client.post("/v1/experiments/wealth_copy/complete", json={"winner": "x"})
        assert unknown.status_code == 422
        done = await client.post("/v1/experiments/wealth_copy/complete", json={"winner": "long"})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "completed"
        assert done.json()["winner"] == "long"
        assert done.json()["winner_decision"]["by"] == "analyst"
        twice = await client.post("/v1/experiments/wealth_copy/complete")
        assert twice.status_code == 409
        assert "completed" in twice.json()["detail"]


async def test_list_filters_and_pages(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await setup(platform, client)
        for i in range(5):
            response = await client.post("/v1/experiments", json=patch_experiment(key=f"exp_{i}"))
            assert response.status_code == 201
        assert (await client.post("/v1/experiments", json=CAMPAIGN)).status_code == 201
        assert (await client.post("/v1/experiments/exp_3/start")).status_code == 200
    async with platform.client("analyst") as client:
        keys: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/v1/experiments", params=params)).json()
            keys += [e["key"] for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert keys == ["channel_test", "exp_0", "exp_1", "exp_2", "exp_3", "exp_4"]
        running = (await client.get("/v1/experiments?status=running")).json()["items"]
        assert [e["key"] for e in running] == ["exp_3"]
        campaigns = (await client.get("/v1/experiments?kind=campaign")).json()["items"]
        assert [e["key"] for e in campaigns] == ["channel_test"]
        assert (await client.get("/v1/experiments?status=nope")).status_code == 422
        assert (await client.get("/v1/experiments?cursor=!!")).status_code == 422
        empty = await client.get("/v1/experiments/exp_3/assignments")
        assert empty.json() == {"items": [], "next_cursor": None}
        missing = await client.get("/v1/experiments/exp_3/assignments/C1")
        assert missing.status_code == 404


async def test_a_strategy_or_segment_an_experiment_acts_on_cannot_be_deleted(
    platform: Platform,
) -> None:
    async with platform.client("marketer") as client:
        await setup(platform, client)
        assert (await client.post("/v1/experiments", json=patch_experiment())).status_code == 201
        rule = {"field": "aum", "op": "gte", "value": 0}
        segment = await client.post("/v1/segments", json={"key": "everyone", "rule": rule})
        assert segment.status_code == 201, segment.text
        on_everyone = {**CAMPAIGN, "key": "everyone_test", "segment": "everyone"}
        assert (await client.post("/v1/experiments", json=on_everyone)).status_code == 201
        for path, user in (
            ("/v1/strategies/wealth", "experiments wealth_copy"),
            ("/v1/segments/everyone", "experiments everyone_test"),
        ):
            refused = await client.delete(path)  # drafts: they may start
            assert refused.status_code == 409, refused.text
            assert user in refused.json()["detail"]
        for key, path in (
            ("wealth_copy", "/v1/strategies/wealth"),
            ("everyone_test", "/v1/segments/everyone"),
        ):
            assert (await client.post(f"/v1/experiments/{key}/start")).status_code == 200
            assert (await client.delete(path)).status_code == 409  # running
            stopped = await client.post(f"/v1/experiments/{key}/stop")
            assert stopped.status_code == 200, stopped.text
        # a winner rolled out acts on sends: its strategy stays; stopped, it no longer does
        # (and its report needs neither)
        assert (await client.post("/v1/experiments", json=patch_experiment("rollout"))).is_success
        assert (await client.post("/v1/experiments/rollout/start")).status_code == 200
        done = await client.post("/v1/experiments/rollout/complete", json={"winner": "long"})
        assert done.status_code == 200, done.text
        refused = await client.delete("/v1/strategies/wealth")
        assert refused.status_code == 409
        assert "experiments rollout" in refused.json()["detail"]
        async with platform.runtime.sessionmaker() as session:  # as if completed without one
            await session.execute(update(Experiment).values(winner=None))
            await session.commit()
        assert (await client.delete("/v1/strategies/wealth")).status_code == 204
        assert (await client.delete("/v1/segments/everyone")).status_code == 204
