"""The platform configured by the simulator's providers file: real adapters end to end."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.runtime import Runtime
from app.scenarios import service as scenario_service
from channels.simulator.server import Simulator, SimulatorOptions
from tests.conftest import SCENARIO, VARIABLES, Platform, make_settings

SMS = {
    "body": "【示例银行】尾号{{ account_tail }}支出{{ amount }}元",
    "provider_templates": {
        "aliyun_sms": {"template_code": "SMS_1", "params": {"tail": "{{ account_tail }}"}},
        "tencent_sms": {"template_code": "1001", "params": {"tail": "{{ account_tail }}"}},
    },
}


@pytest.fixture
async def simulated(
    tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[tuple[Platform, Simulator]]:
    simulator = Simulator(SimulatorOptions(port=0, smtp_port=0))
    await simulator.start()
    providers = tmp_path / "providers.toml"
    providers.write_text(simulator.providers_toml(), encoding="utf-8")
    db = tmp_path / "icc.db"
    shutil.copy(sqlite_template, db)
    scenario_service.clear_cache()
    settings = make_settings(f"sqlite:///{db}", None, providers_file=str(providers))
    runtime = Runtime(settings, run_workers=True)
    await runtime.start()
    platform = Platform("sqlite", runtime)
    await platform.create_keys()
    await platform.create_scenario(templates={**SCENARIO["templates"], "sms": SMS})
    yield platform, simulator
    await runtime.close()
    await simulator.stop()
    scenario_service.clear_cache()


async def _send(platform: Platform, recipient: dict[str, str], **extra: Any) -> dict[str, Any]:
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": VARIABLES,
                "recipient": recipient,
                **extra,
            },
        )
    assert response.status_code == 202, response.text
    return await platform.wait_terminal(response.json()["id"])


async def test_sms_fails_over_between_two_providers(simulated: tuple[Platform, Simulator]) -> None:
    platform, simulator = simulated
    simulator.aliyun.faults.force("ServiceUnavailable", 100)
    messages = [await _send(platform, {"phone": f"1380000{i:04d}"}) for i in range(6)]
    assert {m["status"] for m in messages} == {"sent"}
    assert {m["provider"] for m in messages} == {"tencent-sim"}
    failed_over = [m for m in messages if any(e["type"] == "failover" for e in m["events"])]
    assert failed_over, "with equal weights some messages must have tried Aliyun first"
    for message in failed_over:
        failed = next(e for e in message["events"] if e["type"] == "attempt_failed")
        assert failed["detail"] == {
            **failed["detail"],
            "provider": "aliyun-sim",
            "code": "ServiceUnavailable",
            "transient": True,
        }
    assert len(simulator.tencent.sends) == 6
    by_context = {s.session_context: s for s in simulator.tencent.sends}
    for message in messages:
        sent = by_context[message["id"]]
        assert sent.template_id == "1001"
        assert sent.template_params == ["1234"]
        assert sent.sign_name == "示例银行"
        assert sent.serial_no == message["provider_message_id"]


async def test_email_goes_through_smtp_with_its_cost(simulated: tuple[Platform, Simulator]) -> None:
    platform, simulator = simulated
    message = await _send(platform, {"email": "zhang.wei@example.com"})
    assert message["status"] == "sent"
    assert message["provider"] == "smtp-sim"
    received = simulator.smtp.handler.received[-1]
    assert received.message["Subject"] == "账户变动 1234"
    assert received.message["Message-ID"] == message["provider_message_id"]


async def test_aliyun_report_callback_marks_delivered(
    simulated: tuple[Platform, Simulator],
) -> None:
    platform, simulator = simulated
    simulator.tencent.faults.force("InternalError.Timeout", 100)
    message = await _send(platform, {"phone": "13800001234"})
    assert message["provider"] == "aliyun-sim"
    report = [
        {
            "phone_number": "13800001234",
            "send_time": "2026-11-23 20:00:00",
            "report_time": "2026-11-23 20:00:05",
            "success": True,
            "err_code": "DELIVERED",
            "err_msg": "用户接收成功",
            "sms_size": "1",
            "biz_id": message["provider_message_id"],
            "out_id": message["id"],
        }
    ]
    token = simulator.options.callback_token
    async with platform.client(None) as client:
        bad = await client.post("/v1/callbacks/aliyun-sim", params={"token": "x" * 24}, json=report)
        assert bad.status_code == 401
        ok = await client.post("/v1/callbacks/aliyun-sim", params={"token": token}, json=report)
        assert ok.status_code == 200
        assert ok.json()["code"] == 0
    async with platform.client("admin") as client:
        after = (await client.get(f"/v1/messages/{message['id']}")).json()
    assert after["status"] == "delivered"
    assert after["events"][-1]["detail"]["code"] == "DELIVERED"
