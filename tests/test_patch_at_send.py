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
