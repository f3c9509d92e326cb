"""`Idempotency-Key` on the creating POSTs (app/idempotency): a replay returns the first
response and creates nothing; another body is refused; concurrent duplicates create once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.models import ApiKey
from app.campaigns.models import Campaign
from app.db import Base
from app.experiments.models import Experiment
from app.idempotency import repository
from app.idempotency.models import IdempotentRequest
from app.main import create_app
from app.scenarios.models import Scenario
from app.settings import Settings
from app.strategies.models import Segment, Strategy
from templates.models import Template, TemplateVersion
from tests.campaigns.helpers import MARKETING
from tests.conftest import SCENARIO, Platform
from tests.experiments.setup import HIGH, LOW, patch_experiment, setup

PROMO = {"field": "tags", "op": "contains", "value": "promo"}
STRATEGY = {
    "key": "loan_idem",
    "scenario": "account_movement",
    "segment": "low_net_worth",
    "patch_templates": {"sms": "loan_patch.sms"},
    "priority": 5,
}
CAMPAIGN = {
    "key": "autumn",
    "scenario": "wealth_offer",
    "segment": "high_net_worth",
    "variables": {"product": "稳健理财"},
}
# path, the table of what it creates, a body, another body
CASES: list[tuple[str, type[Base], dict[str, Any], dict[str, Any]]] = [
    ("/v1/scenarios", Scenario, {**SCENARIO, "key": "salary"}, {**SCENARIO, "key": "salary2"}),
    (
        "/v1/templates",
        Template,
        {"key": "idem.sms", "channel": "sms", "content": {"body": "a"}},
        {"key": "idem.sms", "channel": "sms", "content": {"body": "b"}},
    ),
    (
        "/v1/templates/idem.sms/versions",
        TemplateVersion,
        {"content": {"body": "v"}},
        {"content": {"body": "w"}},
    ),
    ("/v1/segments", Segment, {"key": "rich", "rule": HIGH}, {"key": "rich", "rule": LOW}),
    ("/v1/strategies", Strategy, STRATEGY, {**STRATEGY, "priority": 6}),
    ("/v1/experiments", Experiment, patch_experiment("idem"), patch_experiment("idem2")),
    ("/v1/campaigns", Campaign, CAMPAIGN, {**CAMPAIGN, "variables": {"product": "x"}}),
]


async def _rows(platform: Platform, model: type[Base]) -> int:
    async with platform.runtime.sessionmaker() as session:
        count: int = await session.scalar(select(func.count()).select_from(model)) or 0
        return count


def _key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def _world(platform: Platform, client: httpx.AsyncClient) -> None:
    await setup(platform, client)  # scenario, segments, templates, strategies
    await platform.create_scenario(**MARKETING)


async def test_every_creating_route_replays(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _world(platform, client)
        for index, (path, model, body, other) in enumerate(CASES):
            key = f"create {index}: {path}"
            first = await client.post(path, json=body, headers=_key(key))
            assert first.status_code == 201, (path, first.text)
            assert "Idempotency-Replay" not in first.headers
            created = await _rows(platform, model)

            replay = await client.post(path, json=body, headers=_key(key))
            assert replay.status_code == 201, (path, replay.text)
            assert replay.headers["Idempotency-Replay"] == "true"
            assert replay.json() == first.json(), path

            refused = await client.post(path, json=other, headers=_key(key))
            assert refused.status_code == 409, (path, refused.text)
            assert refused.json()["error"] == "IdempotencyKeyReused"
            assert key in refused.json()["detail"]
            assert await _rows(platform, model) == created, path

            # without the header, as before: a second resource or a 409 of the route's own
            plain = await client.post(path, json=body)
            assert "Idempotency-Replay" not in plain.headers
            if model is TemplateVersion:
                assert plain.status_code == 201
                assert plain.json()["version"] == first.json()["version"] + 1
            else:
                assert plain.status_code == 409, (path, plain.text)
                assert plain.json()["error"] != "IdempotencyKeyReused"
    async with platform.runtime.sessionmaker() as session:
        stored = (await session.scalars(select(IdempotentRequest))).all()
    assert sorted(r.route for r in stored) == sorted(
        f"POST {p.replace('idem.sms', '{key}')}" for p, *_ in CASES
    )
    assert {r.owner for r in stored} == {"marketing"}
    assert {r.status_code for r in stored} == {201}


async def test_key_scope_is_owner_route_and_path(platform: Platform) -> None:
    async with platform.client("marketer") as client, platform.client("admin") as admin:
        await client.post("/v1/templates", json={"key": "a.sms", "channel": "sms"})
        await client.post("/v1/templates", json={"key": "b.sms", "channel": "sms"})
        body = {"content": {"body": "x"}}
        first = await client.post("/v1/templates/a.sms/versions", json=body, headers=_key("k"))
        assert first.status_code == 201
        # another owner's same key is its own: created, not replayed
        other_owner = await admin.post("/v1/templates/a.sms/versions", json=body, headers=_key("k"))
        assert other_owner.status_code == 201
        assert "Idempotency-Replay" not in other_owner.headers
        assert other_owner.json()["version"] == first.json()["version"] + 1
        # the same key on another template is another request
        elsewhere = await client.post("/v1/templates/b.sms/versions", json=body, headers=_key("k"))
        assert elsewhere.status_code == 409
        assert elsewhere.json()["error"] == "IdempotencyKeyReused"
        # another route keeps its own keys
        template = {"key": "c.sms", "channel": "sms"}
        assert (await client.post("/v1/templates", json=template, headers=_key("k"))).is_success


async def test_failed_first_attempt_stores_nothing(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        bad = {"key": "promo", "rule": {"field": "nope", "op": "eq", "value": 1}}
        failed = await client.post("/v1/segments", json=bad, headers=_key("seg"))
        assert failed.status_code == 422, failed.text
        # an integer beyond 64 bits is hashed too (orjson refuses it), then refused
        huge = {"key": "promo", "rule": {"field": "aum", "op": "gt", "value": 10**30}}
        refused = await client.post("/v1/segments", json=huge, headers=_key("seg"))
        assert refused.status_code == 422, refused.text
        await platform.create_scenario()
        taken = await client.post("/v1/scenarios", json=SCENARIO, headers=_key("sc"))
        assert taken.status_code == 409
        assert taken.json()["error"] != "IdempotencyKeyReused"
        assert await _rows(platform, IdempotentRequest) == 0
        good = {"key": "promo", "rule": PROMO}
        fixed = await client.post("/v1/segments", json=good, headers=_key("seg"))
        assert fixed.status_code == 201, fixed.text
        renamed = {**SCENARIO, "key": "salary"}
        retried = await client.post("/v1/scenarios", json=renamed, headers=_key("sc"))
        assert retried.status_code == 201, retried.text


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\xe9"])
async def test_invalid_key_is_refused(platform: Platform, key: str) -> None:
    async with platform.client("marketer") as client:
        headers = {b"Idempotency-Key": key.encode("latin-1")}
        response = await client.post(
            "/v1/segments", json={"key": "s", "rule": PROMO}, headers=headers
        )
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "Idempotency-Key"
    assert await _rows(platform, Segment) == 0


async def test_concurrent_duplicates_create_once(platform: Platform) -> None:
    body = {"key": "promo", "rule": PROMO}
    async with platform.client("marketer") as client:
        responses = await asyncio.gather(
            *(client.post("/v1/segments", json=body, headers=_key("once")) for _ in range(20))
        )
    assert await _rows(platform, Segment) == 1
    created = [r for r in responses if r.status_code == 201]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(created) + len(in_progress) == 20, [r.text for r in responses]
    assert all(r.json()["error"] == "IdempotencyInProgress" for r in in_progress)
    firsts = [r for r in created if "Idempotency-Replay" not in r.headers]
    assert len(firsts) == 1
    assert all(r.json() == firsts[0].json() for r in created)


@pytest.mark.parametrize("first_commits", [True, False])
async def test_a_duplicate_waits_for_the_first_transaction(
    platform: Platform, first_commits: bool
) -> None:
    """The unique constraint, not a read-then-write, decides who creates: a second claim
    waits for the first transaction, then loses (committed) or wins (rolled back)."""
    where = {"owner": "o", "route": "POST /v1/x", "key": "k", "request_hash": "h"}
    maker = platform.runtime.sessionmaker

    async def second() -> str | None:
        async with maker() as session:
            claimed = await repository.claim(session, **where, status_code=201)
            await session.commit()
            return claimed

    async with maker() as first:
        row_id = await repository.claim(first, **where, status_code=201)
        assert row_id is not None
        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        if first_commits:
            await repository.complete(first, row_id, {"id": "x"})
            await first.commit()
        else:
            await first.rollback()
    claimed = await asyncio.wait_for(waiting, 10)
    assert (claimed is None) is first_commits
    assert await _rows(platform, IdempotentRequest) == 1


async def test_keys_never_replay_the_secret(platform: Platform) -> None:
    body = {"name": "loans", "role": "system", "owner": "loans"}
    async with platform.client("admin") as client:
        first = await client.post("/v1/keys", json=body, headers=_key("new-key"))
        assert first.status_code == 201, first.text
        secret = first.json()["key"]
        keys = await _rows(platform, ApiKey)
        again = await client.post("/v1/keys", json=body, headers=_key("new-key"))
        assert again.status_code == 409
        assert again.json()["error"] == "AlreadyCreated"
        assert first.json()["id"] in again.json()["detail"]
        assert secret not in again.text
        assert "Idempotency-Replay" not in again.headers
        other = await client.post("/v1/keys", json={**body, "name": "x"}, headers=_key("new-key"))
        assert other.json()["error"] == "IdempotencyKeyReused"
        assert await _rows(platform, ApiKey) == keys
    async with platform.runtime.sessionmaker() as session:
        stored = (await session.scalars(select(IdempotentRequest))).one()
    assert stored.response is not None
    assert "key" not in stored.response
    assert secret not in str(stored.response)
    assert secret[:8] == stored.response["prefix"]


def test_openapi_documents_the_header() -> None:
    spec = create_app(Settings()).openapi()
    for route in [*(case[0] for case in CASES), "/v1/keys"]:
        path = route.replace("idem.sms", "{key}")
        op = spec["paths"][path]["post"]
        names = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        assert names == ["Idempotency-Key"], path
        assert "Idempotency-Replay" in op["responses"]["201"]["headers"], path
        assert "409" in op["responses"], path


async def test_old_records_are_forgotten_by_id_range(platform: Platform) -> None:
    """Records older than ICC_API__IDEMPOTENCY_DAYS go (found by their time-sortable ids);
    newer ones stay, so a retry within the period still replays."""
    from datetime import timedelta

    from app.idempotency import tasks
    from app.ids import first_id_at
    from app.timeutil import utcnow

    async with platform.client("marketer", **{"Idempotency-Key": "seg-1"}) as client:
        body = {"key": "recent_segment", "rule": {"field": "locale", "op": "exists"}}
        assert (await client.post("/v1/segments", json=body)).status_code == 201
    old_at = int((utcnow() - timedelta(days=8)).timestamp() * 1000)
    async with platform.runtime.sessionmaker() as session:
        for i in range(3):
            session.add(
                IdempotentRequest(
                    id=first_id_at("idem", old_at + i),
                    owner="marketing",
                    route="POST /v1/segments",
                    key=f"old-{i}",
                    request_hash="0" * 64,
                    status_code=201,
                    response={},
                    created_at=utcnow() - timedelta(days=8),
                )
            )
        await session.commit()
    tasks._next_run = 0.0  # the platform's sweeper may also run it now: count what is left
    await tasks.forget_old(platform.runtime)
    assert await tasks.forget_old(platform.runtime) == 0  # rests until the next hour
    async with platform.runtime.sessionmaker() as session:
        keys = set(await session.scalars(select(IdempotentRequest.key)))
    assert keys == {"seg-1"}
    async with platform.client("marketer", **{"Idempotency-Key": "seg-1"}) as client:
        replay = await client.post("/v1/segments", json=body)
    assert replay.headers.get("Idempotency-Replay") == "true"
