from __future__ import annotations

from tests.conftest import VARIABLES, Platform


async def test_send_reaches_sandbox_with_full_timeline(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C9",
                "variables": VARIABLES,
                "recipient": {"phone": "13800001234"},
            },
        )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["channels"] == ["sms"]
    message = await platform.wait_terminal(accepted["id"])
    assert message["status"] == "delivered"
    assert message["channel"] == "sms"
    assert message["recipient"] == {"phone": "138****1234"}
    assert message["content"]["sms"]["body"] == "【示例银行】您尾号1234的账户支出1200.00元"
    types = [e["type"] for e in message["events"]]
    assert types == ["accepted", "queued", "sending", "sent", "delivered"]
    async with platform.client("analyst") as client:
        sandbox = (
            await client.get("/v1/sandbox/deliveries", params={"message_id": accepted["id"]})
        ).json()
    assert len(sandbox["items"]) == 1
    assert sandbox["items"][0]["to"] == "138****1234"
    assert sandbox["items"][0]["content"]["body"] == message["content"]["sms"]["body"]
