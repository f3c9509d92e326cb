"""Tracked links and open pixels end to end, on SQLite and on PostgreSQL: rewritten at accept
time in the messages' transaction (single sends, batches, COPY), followed through the public
routes, a click or open counted once per message."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from app.messages import bulk_pg
from app.tracking import links
from app.tracking import repository as tracking_repository
from app.tracking.endpoints import PIXEL
from app.tracking.models import TrackedLink
from app.tracking.service import needs_tracking
from tests.conftest import VARIABLES, Platform
from tests.tracking.common import BASE, MARKETING, events, links_of, message_row, promo, send


@pytest.fixture
def copy_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_pg, "MIN_ROWS", 1)


def _tracked(url: str) -> str:
    assert url.startswith(f"{BASE}/t/"), url
    return url.removeprefix(f"{BASE}/t/")


async def _detail(platform: Platform, message_id: str) -> dict[str, Any]:
    async with platform.client("admin") as client:
        response = await client.get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_marketing_links_are_rewritten_and_stored(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    message_id = await send(platform, promo())
    content = (await _detail(platform, message_id))["content"]
    stored = await links_of(platform, message_id)
    by_token = {link.token: link for link in stored}
    sms_url = content["sms"]["body"].split("详情见")[1].split("。")[0]
    assert by_token[_tracked(sms_url)].url == "https://bank.cn/wealth?id=W42&src=sms"
    wechat_token = _tracked(content["wechat"]["url"])
    assert by_token[wechat_token].url == "https://bank.cn/wx/wealth?id=W42"
    html = content["email"]["html"]
    assert 'href="mailto:vip@bank.cn"' in html
    href = html.split('<a href="')[1].split('"')[0]
    assert by_token[_tracked(href)].url == "https://bank.cn/wealth?id=W42&src=mail"
    assert _tracked(content["email"]["body"].split(" ")[1]) == _tracked(href)  # same URL
    pixel = html.split('<img src="')[1].split('"')[0]
    assert pixel.startswith(f"{BASE}/o/")
    assert html.endswith('style="display:none"></body></html>')
    assert by_token[pixel.removeprefix(f"{BASE}/o/")].kind == "open"
    assert sorted(link.kind for link in stored) == ["link", "link", "link", "open"]
    assert all(links.is_token(link.token) for link in stored)


async def test_transactional_message_without_patch_is_untouched(platform: Platform) -> None:
    templates = {
        "sms": {"body": "您尾号{{ account_tail }}的账户支出{{ amount }}元，详见https://bank.cn/a"},
        "wechat": {"body": "支出{{ amount }}元"},
        "email": {"subject": "s", "body": "b", "html": '<a href="https://bank.cn/a">a</a>'},
    }
    await platform.create_scenario(templates=templates)
    body = {"scenario": "account_movement", "customer_id": "C1", "variables": VARIABLES}
    message_id = await send(platform, {**body, "recipient": {"phone": "13800001234"}})
    content = (await _detail(platform, message_id))["content"]
    assert content["sms"]["body"] == "您尾号1234的账户支出1200.00元，详见https://bank.cn/a"
    assert await links_of(platform, message_id) == []


async def test_tracking_can_be_switched_off(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform.runtime.settings.tracking, "enabled", False)
    await platform.create_scenario(**MARKETING)
    message_id = await send(platform, promo())
    content = (await _detail(platform, message_id))["content"]
    assert "https://bank.cn/wealth?id=W42&src=sms" in content["sms"]["body"]
    assert await links_of(platform, message_id) == []


async def _first_link(platform: Platform, message_id: str, kind: str = "link") -> TrackedLink:
    return next(link for link in await links_of(platform, message_id) if link.kind == kind)


async def test_click_redirects_and_counts_once_under_concurrent_clicks(
    platform: Platform,
) -> None:
    await platform.create_scenario(**MARKETING)
    message_id = await send(platform, promo())
    link = await _first_link(platform, message_id)
    async with platform.client(None) as client:
        responses = await asyncio.gather(*(client.get(f"/t/{link.token}") for _ in range(20)))
    assert {r.status_code for r in responses} == {302}
    assert {r.headers["location"] for r in responses} == {link.url}
    assert responses[0].headers["cache-control"] == "no-store"
    clicked = await events(platform, message_id, "clicked")
    assert len(clicked) == 1
    assert clicked[0].detail["url"] == link.url
    first_click = (await message_row(platform, message_id)).clicked_at
    assert first_click is not None
    other = [x for x in await links_of(platform, message_id) if x.kind == "link"][-1]
    async with platform.client(None) as client:
        assert (await client.get(f"/t/{other.token}")).status_code == 302
    assert len(await events(platform, message_id, "clicked")) == 1
    assert (await message_row(platform, message_id)).clicked_at == first_click
    detail = await _detail(platform, message_id)
    assert [e["type"] for e in detail["events"]].count("clicked") == 1
    assert datetime.fromisoformat(detail["clicked_at"]) == first_click  # with its offset
    assert detail["opened_at"] is None


async def test_open_pixel_counts_the_first_open(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    message_id = await send(platform, promo())
    pixel = await _first_link(platform, message_id, "open")
    async with platform.client(None) as client:
        first = await client.get(f"/o/{pixel.token}")
        again = await client.get(f"/o/{pixel.token}")
    for response in (first, again):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["cache-control"] == "no-store"
        assert response.content == PIXEL
    assert PIXEL.startswith(b"GIF89a\x01\x00\x01\x00")
    assert len(await events(platform, message_id, "opened")) == 1
    opened_at = (await message_row(platform, message_id)).opened_at
    assert opened_at is not None
    detail = await _detail(platform, message_id)
    assert "opened" in [e["type"] for e in detail["events"]]
    assert datetime.fromisoformat(detail["opened_at"]) == opened_at


async def test_head_requests_are_not_counted(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    message_id = await send(platform, promo())
    link = await _first_link(platform, message_id)
    pixel = await _first_link(platform, message_id, "open")
    async with platform.client(None) as client:
        peeked = await client.head(f"/t/{link.token}")
        peeked_pixel = await client.head(f"/o/{pixel.token}")
        missing = await client.head("/t/zzzzzzzz")
    assert (peeked.status_code, peeked.headers["location"]) == (302, link.url)
    assert peeked_pixel.status_code == 200
    assert missing.status_code == 404
    row = await message_row(platform, message_id)
    assert (row.clicked_at, row.opened_at) == (None, None)
    assert await events(platform, message_id, "clicked") == []
    assert await events(platform, message_id, "opened") == []


async def test_unknown_malformed_and_crossed_tokens_are_404(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    message_id = await send(platform, promo())
    link = await _first_link(platform, message_id)
    pixel = await _first_link(platform, message_id, "open")
    paths = [
        "/t/zzzzzzzz",
        "/o/zzzzzzzz",
        "/t/abc",
        "/t/%E6%B5%8B%E8%AF%95",
        "/t/" + "a" * 300,
        "/t/abcd'--x",
        f"/t/{pixel.token}",
        f"/o/{link.token}",
    ]
    async with platform.client(None) as client:
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"] == "NotFound", path
    assert await events(platform, message_id, "clicked") == []


@pytest.mark.usefixtures("copy_everything")
async def test_batch_writes_links_by_copy(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    items = [{k: v for k, v in promo(f"C{i}").items() if k != "scenario"} for i in range(30)]
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages/batch", json={"scenario": "wealth_promo", "items": items}
        )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 30
    async with platform.runtime.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(TrackedLink))
    assert count == 30 * 4
    first = response.json()["items"][0]["id"]
    link = await _first_link(platform, first)
    async with platform.client(None) as client:
        assert (await client.get(f"/t/{link.token}")).headers["location"] == link.url


@pytest.mark.parametrize("group", [1, 3])
async def test_a_token_that_collides_is_replaced(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, group: int
) -> None:
    """An earlier message holds the token: the new link gets another, content follows."""
    monkeypatch.setattr(bulk_pg, "MIN_ROWS", 1)  # the COPY path on PostgreSQL too
    await platform.create_scenario(**MARKETING)
    taken = (await _first_link(platform, await send(platform, promo("C0")))).token
    fresh = (f"Fresh{n:03d}" for n in itertools.count())
    draws = iter([taken])
    monkeypatch.setattr(links, "new_token", lambda: next(draws, None) or next(fresh))
    items = [{k: v for k, v in promo(f"C{i}").items() if k != "scenario"} for i in range(group)]
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages/batch", json={"scenario": "wealth_promo", "items": items}
        )
    assert response.json()["accepted"] == group, response.text
    message_id = response.json()["items"][0]["id"]
    stored = await links_of(platform, message_id)
    assert len(stored) == 4
    assert taken not in {link.token for link in stored}
    content = (await _detail(platform, message_id))["content"]
    text = repr(content)
    assert taken not in text
    assert all(link.token in text for link in stored)


async def test_a_marketing_patch_is_tracked_on_a_transactional_message(
    platform: Platform,
) -> None:
    """The transactional notice carries a patch with a link: the patch's link is tracked."""
    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    marketing = platform.runtime.settings.marketing  # quiet hours that are not now
    marketing.quiet_hours_start = (local + timedelta(hours=2)).strftime("%H:00")
    marketing.quiet_hours_end = (local + timedelta(hours=3)).strftime("%H:00")
    await platform.create_scenario()
    async with platform.client("marketer") as client:
        for path, body in (
            ("/v1/customer-attributes/aum", {"type": "number"}),
            ("/v1/customers/R1", {"phone": "13800001111", "attributes": {"aum": "800000"}}),
        ):
            assert (await client.put(path, json=body)).status_code in (200, 201)
        rule = {"field": "aum", "op": "gte", "value": 500000}
        steps: list[tuple[str, dict[str, Any]]] = [
            ("/v1/segments", {"key": "rich", "rule": rule}),
            (
                "/v1/templates",
                {
                    "key": "wealth.sms",
                    "channel": "sms",
                    "content": {"body": "理财https://bank.cn/w"},
                },
            ),
            ("/v1/templates/wealth.sms/versions/1/publish", {}),
        ]
        for path, body in steps:
            assert (await client.post(path, json=body)).status_code in (200, 201), path
        strategy = {
            "key": "wealth",
            "scenario": "account_movement",
            "segment": "rich",
            "patch_templates": {"sms": "wealth.sms"},
            "status": "active",
        }
        assert (await client.post("/v1/strategies", json=strategy)).status_code == 201
    body = {"scenario": "account_movement", "customer_id": "R1", "variables": VARIABLES}
    message_id = await send(platform, body)
    row = await message_row(platform, message_id)
    assert row.patch == "wealth", row.decision["patch"]
    [link] = await links_of(platform, message_id)
    assert link.url == "https://bank.cn/w"
    assert f"{BASE}/t/{link.token}" in row.content["sms"]["body"]
    assert "账户支出1200.00元" in row.content["sms"]["body"]


def test_which_messages_are_tracked() -> None:
    decision = {"scenario_class": "transactional"}
    assert not needs_tracking({"decision": decision, "patch": None, "experiment_id": None})
    assert needs_tracking({"decision": decision, "patch": "wealth"})
    assert needs_tracking({"decision": decision, "experiment_id": "exp_1"})
    assert needs_tracking({"decision": {"scenario_class": "marketing"}})


async def test_a_click_that_cannot_be_counted_still_redirects(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    await platform.create_scenario(**MARKETING)
    message_id = await send(platform, promo())
    link = await _first_link(platform, message_id)

    async def broken(*_args: Any) -> bool:
        raise OperationalError("UPDATE messages", {}, Exception("database is locked"))

    monkeypatch.setattr(tracking_repository, "first_touch", broken)
    async with platform.client(None) as client:
        response = await client.get(f"/t/{link.token}")
    assert (response.status_code, response.headers["location"]) == (302, link.url)
    assert await events(platform, message_id, "clicked") == []
