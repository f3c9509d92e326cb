"""The icc command: migrate, demo (twice), keys create, send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.scenarios import service as scenario_service
from app.settings import get_settings


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICC_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("ICC_REDIS_URL", raising=False)
    get_settings.cache_clear()
    scenario_service.clear_cache()
    yield CliRunner()
    get_settings.cache_clear()
    scenario_service.clear_cache()


def test_demo_is_idempotent_and_send_delivers(cli_env: CliRunner) -> None:
    first = cli_env.invoke(main, ["demo"])
    assert first.exit_code == 0, first.output
    assert "created API key demo-admin: icc_" in first.output
    second = cli_env.invoke(main, ["demo"])
    assert second.exit_code == 0, second.output
    assert "created API key" not in second.output
    keys = Path("var/demo-keys.env").read_text().splitlines()
    assert [k.split("=")[0] for k in keys] == ["DEMO_ADMIN_KEY", "DEMO_CORE_BANKING_KEY"]
    assert oct(Path("var/demo-keys.env").stat().st_mode & 0o777) == "0o600"
    sent = cli_env.invoke(
        main,
        [
            "send",
            "--customer",
            "C0002",
            "--var",
            "account_tail=8888",
            "--var",
            "direction=收入",
            "--var",
            "amount=50.00",
            "--var",
            "balance=100.00",
        ],
    )
    assert sent.exit_code == 0, sent.output
    message = json.loads(sent.output[sent.output.index("{") :])
    assert message["status"] == "delivered"
    assert message["channel"] == "sms"  # C0002 has no WeChat: the decision skipped it
    assert message["content"]["sms"]["body"].startswith(
        "【示例银行】您尾号8888的账户收入人民币50.00元"
    )
    assert [e["type"] for e in message["events"]][-2:] == ["sent", "delivered"]


def test_send_reports_validation_errors(cli_env: CliRunner) -> None:
    assert cli_env.invoke(main, ["demo"]).exit_code == 0
    result = cli_env.invoke(main, ["send", "--var", "account_tail=1"])
    assert result.exit_code == 1
    assert '"error": "ValidationError"' in result.output
    assert cli_env.invoke(main, ["send", "--var", "novalue"]).exit_code == 2
    bad_phone = cli_env.invoke(main, ["send", "--phone", "abc"])
    assert bad_phone.exit_code == 1
    assert '"field": "recipient.phone"' in bad_phone.output


def test_keys_create_prints_a_working_key_once(cli_env: CliRunner) -> None:
    result = cli_env.invoke(main, ["keys", "create", "--role", "analyst", "--name", "bi"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("icc_")
    again = cli_env.invoke(main, ["keys", "create", "--role", "analyst", "--name", "bi"])
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert cli_env.invoke(main, ["keys", "create", "--role", "root", "--name", "x"]).exit_code == 2


def test_worker_requires_redis(cli_env: CliRunner) -> None:
    result = cli_env.invoke(main, ["worker"])
    assert result.exit_code == 2
    assert "ICC_REDIS_URL" in result.output
