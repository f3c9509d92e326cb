"""What the marketing patch adds to a transactional notice at send time."""

from __future__ import annotations

from typing import Any

import httpx

from strategies.patch import Patch, PatchSettings, compose
from tests.conftest import Platform
from tests.test_strategies_api import _outside_quiet_hours, _send, _setup


def test_an_empty_patch_is_not_appended_to_the_notice() -> None:
    """A patch that renders to nothing (a condition that does not hold for this message)
    leaves the notice alone: no bare opt-out hint appended."""
    notice = {"body": "【示例银行】您尾号1234的账户支出1200.00元。"}
    composed = compose("sms", notice, Patch(text="  "), PatchSettings())
    assert composed.content["body"] == notice["body"], composed.content["body"]
    assert composed.applied is False


async def _use_patch(client: httpx.AsyncClient, key: str, body: str, variables: list[Any]) -> None:
    created = await client.post(
        "/v1/templates",
        json={"key": key, "channel": "sms", "variables": variables, "content": {"body": body}},
    )
    assert created.status_code == 201, created.text
    published = await client.post(f"/v1/templates/{key}/versions/1/publish")
    assert published.status_code == 200, published.text
    current = (await client.get("/v1/strategies/wealth")).json()
    strategy = {
        k: v for k, v in current.items() if k not in ("id", "key", "created_at", "updated_at")
    }
    strategy["patch_templates"] = {"sms": key}
    assert (await client.put("/v1/strategies/wealth", json=strategy)).status_code == 200


async def test_a_conditional_patch_that_renders_empty_leaves_the_notice_as_is(
    platform: Platform,
) -> None:
    """A "big spenders only" patch renders to nothing for a 1,200.00 movement: the notice
    goes out as it is, and the message does not count as patched (frequency caps, tracking,
    experiments)."""
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        await _use_patch(
            client,
            "big_spender.sms",
            "{% if amount|float > 100000 %}大额消费分期低至3.5折{% endif %}",
            [{"name": "amount", "type": "decimal"}],
        )
    message = await _send(platform, "R1")
    body = message["content"]["sms"]["body"]
    assert body == "【示例银行】您尾号1234的账户支出1200.00元", body
    assert message["decision"]["strategy"] is None


async def test_the_patch_shows_times_in_the_customers_time_zone(platform: Platform) -> None:
    """The patch shows `|datetime` in the customer's time zone, as the notice does: New York
    time to a New York customer, not Shanghai's."""
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        moved = await client.put(
            "/v1/customers/R1",
            json={
                "name": "张伟",
                "phone": "13800001200",
                "timezone": "America/New_York",
                "attributes": {"aum": "800000"},
                "tags": ["payroll"],
            },
        )
        assert moved.status_code in (200, 201), moved.text
        await _use_patch(
            client,
            "deadline.sms",
            "理财专享额度{{ until|datetime('%m-%d %H:%M') }}前有效",
            [{"name": "until", "type": "datetime"}],
        )
    # 2026-01-10 12:00 UTC is 07:00 in New York (20:00 in Shanghai)
    message = await _send(
        platform,
        "R1",
        variables={"account_tail": "1234", "amount": "1200.00", "until": "2026-01-10T12:00:00Z"},
    )
    body = message["content"]["sms"]["body"]
    assert message["decision"]["strategy"] == "wealth", message["decision"]
    assert "01-10 07:00前有效" in body, body


async def test_an_inline_profile_reads_values_as_the_customer_api_stores_them(
    platform: Platform,
) -> None:
    """A send's inline `profile` (and explain's) reads aum "900000.00" (a decimal string,
    the platform's convention for money) as a number, as PUT /v1/customers stores it: the
    high-net-worth patch applies."""
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        explained = await client.post(
            "/v1/strategies/explain",
            json={"scenario": "account_movement", "profile": {"aum": "900000.00"}},
        )
        assert explained.status_code == 200, explained.text
        sms = next(c for c in explained.json()["channels"] if c["channel"] == "sms")
    inline = await _send(
        platform, "X9", recipient={"phone": "13900000009"}, profile={"aum": "900000.00"}
    )
    assert inline["decision"]["strategy"] == "wealth", inline["decision"]["patch"]
    assert sms["strategy"] == "wealth", sms


async def test_an_inline_profile_value_of_the_wrong_type_is_named(platform: Platform) -> None:
    """Explain refuses it with a 422 naming profile.<name>; a send goes (the notice is never
    refused for its patch), decides without it and says so in decision.patch."""
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        explained = await client.post(
            "/v1/strategies/explain",
            json={"scenario": "account_movement", "profile": {"aum": "lots"}},
        )
    assert explained.status_code == 422, explained.text
    assert [f["field"] for f in explained.json()["fields"]] == ["profile.aum"]
    sent = await _send(platform, "X9", recipient={"phone": "13900000009"}, profile={"aum": "lots"})
    assert sent["decision"]["strategy"] is None
    assert set(sent["decision"]["patch"]["profile_ignored"]) == {"aum"}


async def test_a_wechat_patch_jump_url_is_rendered(platform: Platform) -> None:
    """A WeChat patch template's jump `url` is Jinja2, rendered with the message's variables
    as a notice's url is."""
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        wechat = {
            "body": "稳健理财年化3.2%",
            "wechat": {
                "template_id": "TPL_WEALTH",
                "fields": {"remark": "稳健理财年化3.2%"},
                "url": "https://bank.example/wealth?tail={{ account_tail }}",
            },
        }
        created = await client.post(
            "/v1/templates",
            json={
                "key": "wealth_patch.wechat",
                "channel": "wechat",
                "variables": [{"name": "account_tail", "type": "string"}],
                "content": wechat,
            },
        )
        assert created.status_code == 201, created.text
        published = await client.post("/v1/templates/wealth_patch.wechat/versions/1/publish")
        assert published.status_code == 200, published.text
        current = (await client.get("/v1/strategies/wealth")).json()
        strategy = {
            k: v for k, v in current.items() if k not in ("id", "key", "created_at", "updated_at")
        }
        strategy["patch_templates"] = {"wechat": "wealth_patch.wechat"}
        assert (await client.put("/v1/strategies/wealth", json=strategy)).status_code == 200
        customer = await client.put(
            "/v1/customers/R1",
            json={
                "name": "张伟",
                "phone": "13800001200",
                "wechat_openid": "oR1-openid",
                "attributes": {"aum": "800000"},
                "tags": ["payroll"],
            },
        )
        assert customer.status_code in (200, 201), customer.text
    platform.runtime.settings.tracking.enabled = False  # look at the URL itself
    message = await _send(platform, "R1", channels=["wechat"])
    assert message["decision"]["strategy"] == "wealth", message["decision"]
    url = message["content"]["wechat"].get("url")
    assert url == "https://bank.example/wealth?tail=1234", url
