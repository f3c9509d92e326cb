"""Shared set-up of the campaign tests: a marketing scenario, customers inserted in bulk, a
segment, a campaign experiment (inserted as rows: its API is built elsewhere)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, insert, select

from app.campaigns.models import Campaign
from app.customers.models import Customer, CustomerConsent
from app.experiments.models import Experiment
from app.ids import new_id
from app.messages.models import Message
from app.runtime import Runtime
from app.timeutil import utcnow
from tests.conftest import Platform

MARKETING: dict[str, Any] = {
    "key": "wealth_offer",
    "class": "marketing",
    "channels": ["sms", "email"],
    "required_variables": [{"name": "product", "type": "string"}],
    "templates": {
        "sms": {"body": "【示例银行】{{ product }}限时发售"},
        "email": {"subject": "{{ product }}", "body": "{{ product }}限时发售"},
    },
}
VARIABLES = {"product": "稳健理财"}
SEGMENT = "promo"
SHANGHAI = ZoneInfo("Asia/Shanghai")
VARIANTS: list[dict[str, Any]] = [
    {"key": "sms_a", "weight": 1, "channel": "sms", "template": None, "format": None},
    {"key": "email_b", "weight": 1, "channel": "email", "template": "promo_b.email"},
    {"key": "holdout", "weight": 1, "channel": None, "template": None, "holdout": True},
]


async def stop_background_runner(runtime: Runtime) -> None:
    """Tests that drive runners by hand stop the runtime's own loop first."""
    task = runtime._campaigns
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        runtime._campaigns = None


async def setup(platform: Platform, client: httpx.AsyncClient, customers: int) -> list[str]:
    """Scenario, segment (tag "promo") and ``customers`` customers in it; their ids."""
    await platform.create_scenario(**MARKETING)
    response = await client.post(
        "/v1/segments",
        json={"key": SEGMENT, "rule": {"field": "tags", "op": "contains", "value": "promo"}},
    )
    assert response.status_code == 201, response.text
    content = {"subject": "B {{ product }}", "body": "B"}
    await publish(client, "promo_b.email", "email", content, [{"name": "product"}])
    ids = [f"C{n:05d}" for n in range(customers)]
    await add_customers(platform.runtime, ids)
    await add_customers(platform.runtime, ["X00001"], tags=[])  # outside the segment
    return ids


async def publish(
    client: httpx.AsyncClient,
    key: str,
    channel: str,
    content: dict[str, Any],
    variables: list[dict[str, Any]] | None = None,
) -> None:
    body = {"key": key, "channel": channel, "content": content, "variables": variables or []}
    created = await client.post("/v1/templates", json=body)
    assert created.status_code == 201, created.text
    published = await client.post(f"/v1/templates/{key}/versions/1/publish")
    assert published.status_code == 200, published.text


async def add_customers(
    runtime: Runtime,
    ids: Sequence[str],
    *,
    tags: list[str] | None = None,
    timezone: str = "Asia/Shanghai",
) -> None:
    now = utcnow()
    rows = [
        {
            "id": cid,
            "name": "张伟",
            "phone": f"138{n:08d}",
            "email": f"c{n}@example.com",
            "locale": "zh-CN",
            "timezone": timezone,
            "attributes": {},
            "tags": ["promo"] if tags is None else tags,
            "created_at": now,
            "updated_at": now,
        }
        for n, cid in enumerate(ids)
    ]
    async with runtime.sessionmaker() as session:
        await session.execute(insert(Customer), rows)
        await session.commit()


async def deny_marketing(runtime: Runtime, ids: Sequence[str]) -> None:
    rows = [
        {
            "customer_id": cid,
            "channel": channel,
            "purpose": "marketing",
            "granted": False,
            "source": "test",
            "updated_at": utcnow(),
        }
        for cid in ids
        for channel in ("sms", "email", "wechat")
    ]
    async with runtime.sessionmaker() as session:
        await session.execute(insert(CustomerConsent), rows)
        await session.commit()


async def add_experiment(runtime: Runtime, key: str = "channels", **changes: Any) -> Experiment:
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id("exp"),
        "key": key,
        "kind": "campaign",
        "segment": SEGMENT,
        "variants": VARIANTS,
        "control": "holdout",
        "coverage": 0.5,
        "salt": f"{key}-salt",
        "metric": "clicked",
        "status": "running",
        "created_at": now,
        "updated_at": now,
        **changes,
    }
    async with runtime.sessionmaker() as session:
        experiment = Experiment(**values)
        session.add(experiment)
        await session.commit()
    return experiment


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    payload = {"key": "autumn", "scenario": "wealth_offer", "segment": SEGMENT}
    payload |= {"variables": VARIABLES} | body
    response = await client.post("/v1/campaigns", json=payload)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def start(client: httpx.AsyncClient, key: str = "autumn") -> dict[str, Any]:
    response = await client.post(f"/v1/campaigns/{key}/start")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def campaign(runtime: Runtime, key: str = "autumn") -> Campaign:
    async with runtime.sessionmaker() as session:
        found = await session.scalar(select(Campaign).where(Campaign.key == key))
        assert found is not None
        return found


async def messages(runtime: Runtime) -> list[Message]:
    async with runtime.sessionmaker() as session:
        rows = await session.scalars(select(Message).order_by(Message.customer_id))
        return list(rows.all())


async def message_count(runtime: Runtime) -> int:
    async with runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)
