"""The icc command: migrate, demo (twice, with its A/B experiments), keys create, send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from abtest.assignment import Assigner, Variant
from app.campaigns.models import Campaign
from app.cli import _with_session, main
from app.customers.models import Customer
from app.experiments import patching as experiment_patching
from app.experiments.models import Experiment
from app.scenarios import service as scenario_service
from app.scenarios.models import Scenario
from app.settings import get_settings
from app.strategies import patching as strategy_patching
from templates.models import Template, TemplateVersion


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICC_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("ICC_REDIS_URL", raising=False)
    _clear_caches()
    yield CliRunner()
    _clear_caches()


def _clear_caches() -> None:
    """Each test has its own database: nothing read from another test's may stay cached."""
    get_settings.cache_clear()
    scenario_service.clear_cache()
    strategy_patching.clear_cache()
    experiment_patching.clear_cache()


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


def _demo_state() -> dict[str, Any]:
    """What the demo seeds, with each row's last change, to compare two runs."""

    async def read(session: AsyncSession) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name, model, columns in (
            ("experiments", Experiment, ("key", "kind", "status", "segment", "updated_at")),
            ("campaigns", Campaign, ("key", "status", "experiment", "updated_at")),
            ("scenarios", Scenario, ("key", "message_class", "updated_at")),
            ("templates", Template, ("key", "channel", "current_version", "updated_at")),
            ("versions", TemplateVersion, ("template_id", "version", "status")),
            ("customers", Customer, ("id", "attributes")),
        ):
            rows = await session.execute(select(*(getattr(model, c) for c in columns)))
            state[name] = sorted(tuple(row) for row in rows)
        return state

    result: dict[str, Any] = asyncio.run(_with_session(get_settings(), read))
    return result


def test_demo_seeds_the_ab_experiments_and_campaign_once(cli_env: CliRunner) -> None:
    assert cli_env.invoke(main, ["demo"]).exit_code == 0
    first = _demo_state()
    assert cli_env.invoke(main, ["demo"]).exit_code == 0
    assert _demo_state() == first  # the second run changes nothing
    experiments = {key: (kind, status) for key, kind, status, _, _ in first["experiments"]}
    assert experiments == {
        "wealth_patch_ab": ("patch", "running"),
        "wealth_promo_channel": ("campaign", "running"),
    }
    assert [c[:3] for c in first["campaigns"]] == [
        ("wealth_promo_launch", "draft", "wealth_promo_channel")
    ]
    assert ("wealth_promo", "marketing") in [s[:2] for s in first["scenarios"]]
    templates = {t[0] for t in first["templates"]}
    assert {"wealth_patch_alt.sms", "wealth_promo.sms", "wealth_promo.email"} <= templates
    ids = [c[0] for c in first["customers"]]
    assert ids == [f"C{i:04d}" for i in range(1, 42)]
    rich = [cid for cid, attributes in first["customers"] if attributes["aum"] >= 500_000]
    assert len(rich) == 27  # high_net_worth: C0001, C0004, C0005 and 24 generated


def _outside_quiet_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    monkeypatch.setenv(
        "ICC_MARKETING__QUIET_HOURS_START", (local + timedelta(hours=2)).strftime("%H:00")
    )
    monkeypatch.setenv(
        "ICC_MARKETING__QUIET_HOURS_END", (local + timedelta(hours=3)).strftime("%H:00")
    )
    get_settings.cache_clear()


# arms: alt, alt, current, holdout
@pytest.mark.parametrize("customer", ["C0001", "C0007", "C0019", "C0023"])
def test_demo_send_records_the_patch_experiment(
    cli_env: CliRunner, monkeypatch: pytest.MonkeyPatch, customer: str
) -> None:
    _outside_quiet_hours(monkeypatch)
    assert cli_env.invoke(main, ["demo"]).exit_code == 0
    variables = ("account_tail=1234", "direction=支出", "amount=1200.00", "balance=35200.50")
    args = ["send", "--customer", customer, "--channel", "sms"]
    sent = cli_env.invoke(main, args + [a for v in variables for a in ("--var", v)])
    assert sent.exit_code == 0, sent.output
    message = json.loads(sent.output[sent.output.index("{") :])
    arms = [Variant("holdout", 10.0), Variant("current", 45.0), Variant("alt", 45.0)]
    variant = Assigner(salt="wealth_patch_ab", variants=arms).assign(customer)
    assert (message["experiment"], message["variant"]) == ("wealth_patch_ab", variant)
    body = message["content"]["sms"]["body"]
    patch = {"current": "尊享理财", "alt": "新客专享理财"}
    if variant == "holdout":
        assert "理财" not in body  # the holdout gets no patch
    else:
        assert variant is not None
        assert patch[variant] in body
    assert ("/t/" in body) == (variant == "alt")  # only the alternative patch has a link


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("ICC_DATABASE_URL", "sqlite:///:memory:", "Give a file path"),
        ("ICC_DATABASE_URL", "sqlite://", "Give a file path"),
        ("ICC_DATABASE_URL", "sqlite:///file:x?mode=memory&uri=true", "Give a file path"),
        ("ICC_QUEUE__CONCURRENCY", "0", "greater than or equal to 1"),
    ],
)
def test_a_bad_setting_is_named_without_a_traceback(
    cli_env: CliRunner, monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    result = cli_env.invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert f"invalid configuration:\n  {name}: " in result.output
    assert said in result.output
    assert "Traceback" not in result.output
