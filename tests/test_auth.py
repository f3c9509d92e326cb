"""Every route × no key, a bad key and each role."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import SCENARIO, VARIABLES, Platform

ALL_ROLES = ("admin", "system", "marketer", "analyst")
OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    # authenticated the way each provider signs its pushes (tests/test_callbacks.py)
    ("GET", "/v1/callbacks/{provider_name}"),
    ("POST", "/v1/callbacks/{provider_name}"),
    # tracked links and open pixels, reached by customers (tests/tracking)
    ("GET", "/t/{token}"),
    ("HEAD", "/t/{token}"),
    ("GET", "/o/{token}"),
    ("HEAD", "/o/{token}"),
}

# (method, path) -> roles allowed (admin always)
MATRIX: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/messages"): {"system"},
    ("POST", "/v1/messages/batch"): {"system"},
    ("GET", "/v1/messages"): {"system", "analyst"},
    ("GET", "/v1/messages/{message_id}"): {"system", "analyst"},
    ("POST", "/v1/scenarios"): {"marketer"},
    ("GET", "/v1/scenarios"): {"marketer"},
    ("GET", "/v1/scenarios/{key}"): {"marketer"},
    ("PUT", "/v1/scenarios/{key}"): {"marketer"},
    ("POST", "/v1/templates"): {"marketer"},
    ("GET", "/v1/templates"): {"marketer", "analyst"},
    ("POST", "/v1/templates/preview"): {"marketer"},
    ("GET", "/v1/templates/{key}"): {"marketer", "analyst"},
    ("POST", "/v1/templates/{key}/versions"): {"marketer"},
    ("GET", "/v1/templates/{key}/versions"): {"marketer", "analyst"},
    ("GET", "/v1/templates/{key}/versions/{version}"): {"marketer", "analyst"},
    ("PUT", "/v1/templates/{key}/versions/{version}"): {"marketer"},
    ("POST", "/v1/templates/{key}/versions/{version}/publish"): {"marketer"},
    ("POST", "/v1/keys"): set(),
    ("GET", "/v1/keys"): set(),
    ("DELETE", "/v1/keys/{key_id}"): set(),
    ("GET", "/v1/sandbox/deliveries"): {"analyst"},
    ("PUT", "/v1/customers/{customer_id}"): {"system", "marketer"},
    ("GET", "/v1/customers/{customer_id}"): {"system", "marketer", "analyst"},
    ("GET", "/v1/customers"): {"system", "marketer", "analyst"},
    ("DELETE", "/v1/customers/{customer_id}"): {"system"},
    ("POST", "/v1/customers/{customer_id}/opt-out"): {"system", "marketer"},
    ("POST", "/v1/customers/{customer_id}/opt-in"): {"system", "marketer"},
    ("POST", "/v1/customers/import"): {"system", "marketer"},
    ("GET", "/v1/customer-attributes"): {"system", "marketer", "analyst"},
    ("GET", "/v1/customer-attributes/{name}"): {"system", "marketer", "analyst"},
    ("PUT", "/v1/customer-attributes/{name}"): {"marketer"},
    ("DELETE", "/v1/customer-attributes/{name}"): {"marketer"},
    ("POST", "/v1/segments"): {"marketer"},
    ("GET", "/v1/segments"): {"marketer"},
    ("GET", "/v1/segments/{key}"): {"marketer"},
    ("PUT", "/v1/segments/{key}"): {"marketer"},
    ("DELETE", "/v1/segments/{key}"): {"marketer"},
    ("GET", "/v1/segments/{key}/count"): {"marketer"},
    ("GET", "/v1/segments/{key}/sample"): {"marketer"},
    ("POST", "/v1/strategies"): {"marketer"},
    ("GET", "/v1/strategies"): {"marketer"},
    ("GET", "/v1/strategies/{key}"): {"marketer"},
    ("PUT", "/v1/strategies/{key}"): {"marketer"},
    ("DELETE", "/v1/strategies/{key}"): {"marketer"},
    ("POST", "/v1/strategies/explain"): {"marketer"},
    ("POST", "/v1/strategies/dry-run"): {"marketer"},
    ("POST", "/v1/experiments"): {"marketer"},
    ("GET", "/v1/experiments"): {"marketer", "analyst"},
    ("GET", "/v1/experiments/{ref}"): {"marketer", "analyst"},
    ("PATCH", "/v1/experiments/{ref}"): {"marketer"},
    ("DELETE", "/v1/experiments/{ref}"): {"marketer"},
    ("POST", "/v1/experiments/{ref}/start"): {"marketer"},
    ("POST", "/v1/experiments/{ref}/stop"): {"marketer"},
    ("POST", "/v1/experiments/{ref}/complete"): {"marketer"},
    ("GET", "/v1/experiments/{ref}/assignments"): {"marketer", "analyst"},
    ("GET", "/v1/experiments/{ref}/assignments/{customer_id}"): {"marketer", "analyst"},
    ("GET", "/v1/experiments/{key}/report"): {"marketer", "analyst"},
    ("GET", "/v1/experiments/{key}/report.csv"): {"marketer", "analyst"},
    ("GET", "/v1/experiments/{key}/report.html"): {"marketer", "analyst"},
    ("POST", "/v1/campaigns"): {"marketer"},
    ("GET", "/v1/campaigns"): {"marketer", "analyst"},
    ("GET", "/v1/campaigns/{key}"): {"marketer", "analyst"},
    ("PATCH", "/v1/campaigns/{key}"): {"marketer"},
    ("POST", "/v1/campaigns/{key}/start"): {"marketer"},
    ("POST", "/v1/campaigns/{key}/pause"): {"marketer"},
    ("POST", "/v1/campaigns/{key}/resume"): {"marketer"},
    ("POST", "/v1/campaigns/{key}/cancel"): {"marketer"},
    ("POST", "/v1/conversions"): {"system"},
    ("POST", "/v1/conversions/batch"): {"system"},
    ("GET", "/v1/conversions"): {"analyst"},
}


def _request(method: str, path: str, ids: dict[str, str]) -> tuple[str, dict[str, Any] | None]:
    # templates: the one the scenario's inline SMS template became
    key = "account_movement.sms" if path.startswith("/v1/templates") else "account_movement"
    url = path.format(
        message_id=ids["message"],
        key=key,
        key_id="key_missing",
        version=1,
        customer_id="C1",
        name="tier",
        ref="some_experiment",
    )
    draft = {"content": {"body": "尾号{{ account_tail }}"}}
    bodies: dict[str, dict[str, Any]] = {
        "/v1/messages": {
            "scenario": "account_movement",
            "customer_id": "C1",
            "variables": VARIABLES,
            "recipient": {"phone": "13800001234"},
        },
        "/v1/messages/batch": {
            "scenario": "account_movement",
            "items": [{"customer_id": "C1", "variables": VARIABLES}],
        },
        "/v1/scenarios": {**SCENARIO, "key": "other_scenario"},
        "/v1/scenarios/{key}": {k: v for k, v in SCENARIO.items() if k != "key"},
        "/v1/keys": {"name": "new-key", "role": "analyst"},
        "/v1/templates": {"key": "other_template", "channel": "sms"},
        "/v1/templates/preview": {"draft": {"channel": "sms", **draft}},
        "/v1/templates/{key}/versions": draft,
        "/v1/templates/{key}/versions/{version}": draft,
        "/v1/customers/{customer_id}": {"name": "张三"},
        "/v1/customers/{customer_id}/opt-out": {"channel": "sms"},
        "/v1/customers/{customer_id}/opt-in": {},
        "/v1/customer-attributes/{name}": {"type": "string"},
        "/v1/segments": {"key": "some_segment", "rule": {"field": "locale", "op": "exists"}},
        "/v1/segments/{key}": {"rule": {"field": "locale", "op": "exists"}},
        "/v1/strategies": {"key": "s"},
        "/v1/strategies/{key}": {"scenario": "account_movement"},
        "/v1/strategies/explain": {"scenario": "account_movement", "customer_id": "C1"},
        "/v1/strategies/dry-run": {"scenario": "account_movement"},
        "/v1/experiments": {"key": "e"},
        "/v1/experiments/{ref}": {"name": "n"},
        "/v1/campaigns": {"key": "c"},
        "/v1/campaigns/{key}": {"name": "n"},
        "/v1/conversions": {"customer_id": "C1", "event": "wealth_purchase"},
        "/v1/conversions/batch": {"items": [{"customer_id": "C1", "event": "e"}]},
    }
    return url, bodies.get(path) if method in ("POST", "PUT", "PATCH") else None


def test_matrix_covers_every_route() -> None:
    from app.main import create_app
    from app.settings import Settings

    paths = create_app(Settings()).openapi()["paths"]
    routes = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert routes == set(MATRIX) | OPEN_ROUTES


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_auth_matrix(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        sent = await client.post(
            "/v1/messages", json=_request("POST", "/v1/messages", {"message": ""})[1]
        )
    ids = {"message": sent.json()["id"]}
    for (method, path), allowed in MATRIX.items():
        url, body = _request(method, path, ids)
        for label, headers in (("none", {}), ("bad", {"Authorization": "Bearer icc_wrong"})):
            async with platform.client(None, **headers) as client:
                response = await client.request(method, url, json=body)
            assert response.status_code == 401, (method, path, label, response.text)
            assert response.json()["error"] == "Unauthorized"
        for role in ALL_ROLES:
            async with platform.client(role) as client:
                response = await client.request(method, url, json=body)
            if role == "admin" or role in allowed:
                assert response.status_code not in (401, 403), (method, path, role, response.text)
            else:
                assert response.status_code == 403, (method, path, role, response.text)
                assert response.json()["error"] == "Forbidden"
    async with platform.client(None) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json()["database"] == "ok"


async def test_keys_lifecycle(platform: Platform) -> None:
    async with platform.client("admin") as admin:
        created = await admin.post("/v1/keys", json={"name": "loans", "role": "system"})
        assert created.status_code == 201
        key = created.json()
        assert key["key"].startswith("icc_")
        assert key["owner"] == "loans"
        listed = (await admin.get("/v1/keys")).json()["items"]
        assert "key" not in listed[0]
        assert "loans" in {k["name"] for k in listed}
        duplicate = await admin.post("/v1/keys", json={"name": "loans", "role": "system"})
        assert duplicate.status_code == 409
    async with platform.client(None, Authorization=f"Bearer {key['key']}") as loans:
        assert (await loans.get("/v1/messages")).status_code == 200
        async with platform.client("admin") as admin:
            assert (await admin.delete(f"/v1/keys/{key['id']}")).status_code == 204
            assert (await admin.delete(f"/v1/keys/{key['id']}")).status_code == 404
        assert (await loans.get("/v1/messages")).status_code == 401


async def test_readyz_reports_each_dependency(platform: Platform) -> None:
    async with platform.client(None) as client:
        body = (await client.get("/readyz")).json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert ("redis" in body) == (platform.backend == "postgres")


async def test_bootstrap_admin_key_is_ensured_at_every_start(platform: Platform) -> None:
    from pydantic import SecretStr

    from app.runtime import Runtime

    settings = platform.runtime.settings.model_copy(
        update={"bootstrap_admin_key": SecretStr("icc_bootstrap_secret_for_tests")}
    )
    for _ in range(2):  # safe to repeat
        runtime = Runtime(settings, run_workers=False)
        await runtime.start()
        await runtime.close()
    async with platform.client(None, Authorization="Bearer icc_bootstrap_secret_for_tests") as c:
        keys = (await c.get("/v1/keys")).json()["items"]
        bootstrap = next(k for k in keys if k["name"] == "bootstrap-admin")
        assert (await c.delete(f"/v1/keys/{bootstrap['id']}")).status_code == 204
        assert (await c.get("/v1/keys")).status_code == 401
    runtime = Runtime(settings, run_workers=False)
    await runtime.start()  # the configuration wins over the revocation
    await runtime.close()
    platform.runtime.keys.clear()
    async with platform.client(None, Authorization="Bearer icc_bootstrap_secret_for_tests") as c:
        assert (await c.get("/v1/keys")).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_key_lookups_are_shared_and_refreshed_ahead(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.auth import repository
    from app.auth.service import KeyCache

    calls: list[str] = []
    original = repository.by_hash

    async def counted(session: Any, digest: str) -> Any:
        calls.append(digest)
        return await original(session, digest)

    monkeypatch.setattr(repository, "by_hash", counted)
    cache = KeyCache(ttl=0.5)
    sessions = platform.runtime.read_sessionmaker
    key = platform.keys["system"]
    found = await asyncio.gather(*(cache.resolve(sessions, key) for _ in range(50)))
    assert len(calls) == 1  # one lookup for 50 requests that missed together
    assert {p.role.value for p in found if p is not None} == {"system"}
    await asyncio.sleep(0.45)  # in the last fifth of its time: answered, refreshed behind
    assert await cache.resolve(sessions, key) is not None
    await asyncio.sleep(0.05)
    assert len(calls) == 2
    assert await cache.resolve(sessions, "icc_unknown") is None
