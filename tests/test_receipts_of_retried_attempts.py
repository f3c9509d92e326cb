"""A receipt that names our message (Aliyun echoes OutId = our message id in every report)
but another provider message id than the one recorded on the message reports an earlier
attempt on the same provider: one that timed out here, was retried, and yet reached the
provider. It goes on the timeline and does not decide the message's status: the retry's own
receipt does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from channels.base import ProviderContext, SendResult
from channels.errors import TransientChannelError
from tests.conftest import VARIABLES, Platform
from tests.providers import ReportingProvider

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


class TimesOutOnce(ReportingProvider):
    """The first send times out here (although the provider accepted it: id "first-try");
    the retry is answered at once."""

    def __init__(self, channel: str, context: ProviderContext) -> None:
        super().__init__(channel, context)
        self.calls = 0

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        self.calls += 1
        if self.calls == 1:
            raise TransientChannelError("no answer within 10s", code="timeout")
        return await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )


async def test_failed_report_of_a_timed_out_first_attempt_does_not_fail_the_message(
    platform: Platform,
) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    platform.runtime.providers.replace("wechat", [TimesOutOnce("wechat", context)])
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": VARIABLES,
                "recipient": {"phone": "13800001234", "wechat_openid": "oAbcd1234567890"},
            },
        )
    message = await platform.wait_terminal(response.json()["id"])
    assert message["status"] == "sent"
    assert message["channel"] == "wechat"
    current = message["provider_message_id"]
    assert current != "first-try"

    # the provider reports on the first (abandoned) attempt: failed; then on the retry
    stale = {
        "delivered": False,
        "message_id": message["id"],
        "provider_message_id": "first-try",
        "code": "MK:0001",
    }
    real = {
        "delivered": True,
        "message_id": message["id"],
        "provider_message_id": current,
        "code": "DELIVERED",
    }
    async with platform.client(None) as client:
        for receipt in (stale, real):
            answer = await client.post(
                "/v1/callbacks/reporting-wechat",
                params={"token": "cb-token"},
                json={"receipts": [receipt]},
            )
            assert answer.status_code == 200, answer.text
    async with platform.client("admin") as client:
        after = (await client.get(f"/v1/messages/{message['id']}")).json()
    types = [e["type"] for e in after["events"]]
    assert "fallback" not in types, types
    assert (after["status"], after["channel"]) == ("delivered", "wechat"), (
        after["status"],
        after["channel"],
        after["status_reason"],
        types,
    )
