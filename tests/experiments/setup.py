"""Shared set-up of the experiment tests: attributes, customers, segments, templates and
strategies through the API."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Platform

HIGH = {"field": "aum", "op": "gte", "value": 500000}
LOW = {"field": "aum", "op": "lt", "value": 50000}


async def template(client: httpx.AsyncClient, key: str, body: str, channel: str = "sms") -> None:
    content: dict[str, Any] = {"body": body}
    if channel == "email":
        content["subject"] = "s"
    created = await client.post(
        "/v1/templates", json={"key": key, "channel": channel, "content": content}
    )
    assert created.status_code == 201, created.text
    published = await client.post(f"/v1/templates/{key}/versions/1/publish")
    assert published.status_code == 200, published.text


async def customer(client: httpx.AsyncClient, cid: str, aum: int, phone: str) -> None:
    body = {"name": "张伟", "phone": phone, "attributes": {"aum": str(aum)}}
    response = await client.put(f"/v1/customers/{cid}", json=body)
    assert response.status_code in (200, 201), response.text


async def setup(platform: Platform, client: httpx.AsyncClient) -> None:
    """Scenario account_movement; segments high_net_worth and low_net_worth; active
    strategies wealth (high) and loan (low); patch templates for both and two variants."""
    await platform.create_scenario()
    response = await client.put("/v1/customer-attributes/aum", json={"type": "number"})
    assert response.status_code in (200, 201), response.text
    for key, rule in (("high_net_worth", HIGH), ("low_net_worth", LOW)):
        response = await client.post("/v1/segments", json={"key": key, "rule": rule})
        assert response.status_code == 201, response.text
    await template(client, "wealth_patch.sms", "稳健理财年化3.2%")
    await template(client, "loan_patch.sms", "您有一笔预授信贷款额度")
    await template(client, "wealth_short.sms", "理财短文案")
    await template(client, "wealth_long.sms", "理财长文案：稳健增值")
    await template(client, "wealth_mail", "理财邮件", channel="email")
    for key, segment, tpl, priority in (
        ("wealth", "high_net_worth", "wealth_patch.sms", 1),
        ("loan", "low_net_worth", "loan_patch.sms", 2),
    ):
        body: dict[str, Any] = {
            "key": key,
            "scenario": "account_movement",
            "segment": segment,
            "patch_templates": {"sms": tpl},
            "priority": priority,
            "status": "active",
        }
        response = await client.post("/v1/strategies", json=body)
        assert response.status_code == 201, response.text


def patch_experiment(key: str = "wealth_copy", **changes: Any) -> dict[str, Any]:
    """A patch experiment on strategy wealth: a 10% holdout, short and long copy."""
    body: dict[str, Any] = {
        "key": key,
        "kind": "patch",
        "segment": "high_net_worth",
        "strategy": "wealth",
        "variants": [
            {"key": "holdout", "weight": 10, "holdout": True},
            {"key": "short", "weight": 45, "template": "wealth_short.sms", "format": "short"},
            {"key": "long", "weight": 45, "template": "wealth_long.sms", "format": "long"},
        ],
    }
    return {**body, **changes}
