"""Provider accounts, the registry, routing, failover, circuit breakers and rate limits."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from channels.accounts import CircuitSettings, load_accounts, parse_accounts
from channels.base import ProviderContext
from channels.circuit import CircuitBreaker, CircuitState
from channels.errors import ProviderConfigError, ProviderFault, TransientChannelError
from channels.ratelimit import LocalRateLimiter, RateLimitExceeded
from channels.registry import ProviderRegistry
from tests.conftest import VARIABLES, Platform
from tests.delivery_attempts import open_circuit
from tests.providers import AlwaysFailing, ScriptedProvider

TOML = """
[[providers]]
name = "sms-a"
type = "sandbox"
channel = "sms"
priority = 1
weight = 300
rate_per_second = 50
cost = "0.045"
[providers.settings]
secret = "${ICC_TEST_SECRET}"

[[providers]]
name = "sms-b"
type = "sandbox"
channel = "sms"
priority = 1
weight = 100

[[providers]]
name = "sms-backup"
type = "sandbox"
channel = "sms"
priority = 2
"""


def test_accounts_file_resolves_env_and_validates() -> None:
    accounts = parse_accounts(TOML, source="p.toml", env={"ICC_TEST_SECRET": "s3cret"})
    assert [a.name for a in accounts] == ["sms-a", "sms-b", "sms-backup"]
    assert accounts[0].settings == {"secret": "s3cret"}
    assert accounts[0].cost == Decimal("0.045")
    with pytest.raises(ProviderConfigError, match="ICC_TEST_SECRET is not set"):
        parse_accounts(TOML, source="p.toml", env={})
    with pytest.raises(ProviderConfigError, match="two providers are named"):
        parse_accounts(TOML + TOML, source="p.toml", env={"ICC_TEST_SECRET": "x"})
    with pytest.raises(ProviderConfigError, match="channel"):
        parse_accounts('[[providers]]\nname="x"\ntype="sandbox"\nchannel="fax"', source="p")
    with pytest.raises(ProviderConfigError, match="not valid TOML"):
        parse_accounts("[[providers", source="p")
    with pytest.raises(ProviderConfigError, match="cannot read"):
        load_accounts("/nonexistent/providers.toml")


def test_registry_fails_fast_on_unknown_type_or_wrong_channel() -> None:
    context = ProviderContext()
    bad_type = parse_accounts('[[providers]]\nname="x"\ntype="nope"\nchannel="sms"', source="p")
    with pytest.raises(ProviderConfigError, match=r"unknown type 'nope'.*sandbox"):
        ProviderRegistry.build(bad_type, context)


def test_routing_by_priority_then_weight() -> None:
    accounts = parse_accounts(TOML, source="p.toml", env={"ICC_TEST_SECRET": "x"})
    registry = ProviderRegistry.build(accounts, ProviderContext())
    rng = random.Random(7)
    firsts = Counter(registry.route("sms", rng)[0].name for _ in range(4000))
    assert set(firsts) == {"sms-a", "sms-b"}
    assert 0.70 < firsts["sms-a"] / 4000 < 0.80  # weights 300:100
    for _ in range(50):
        assert registry.route("sms", rng)[-1].name == "sms-backup"
    assert registry.route("email") == []
    assert registry.slot("sms-a") is not None
    assert registry.slot("sms-a").rate == (50, 50)  # type: ignore[union-attr]


def state(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


def test_circuit_opens_on_error_rate_and_closes_after_a_good_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        CircuitSettings(error_rate=0.5, min_requests=4, window_seconds=10, open_seconds=5),
        clock=lambda: now[0],
    )

    def send(*, failed: bool) -> None:
        ticket = breaker.allow()
        assert ticket is not None
        breaker.record(ticket, failed=failed)

    for failed in (False, True, True):
        send(failed=failed)
    assert state(breaker) is CircuitState.closed  # below min_requests
    send(failed=True)
    assert state(breaker) is CircuitState.open
    assert breaker.allow() is None
    now[0] = 6.0
    assert state(breaker) is CircuitState.half_open
    probe = breaker.allow()
    assert probe is not None
    assert probe.probe
    assert breaker.allow() is None  # one probe at a time
    breaker.record(probe, failed=True)
    assert state(breaker) is CircuitState.open
    now[0] = 12.0
    send(failed=False)  # the probe
    assert state(breaker) is CircuitState.closed
    now[0] = 30.0
    for failed in (True, False, False, False):
        send(failed=failed)
    assert state(breaker) is CircuitState.closed  # 25% < 50%


async def test_local_rate_limit_lets_a_burst_through_then_paces() -> None:
    limiter = LocalRateLimiter(max_wait=5)
    started = time.monotonic()
    stamps = []

    async def one() -> None:
        await limiter.acquire("p", rate=20, burst=5)
        stamps.append(time.monotonic() - started)

    await asyncio.gather(*(one() for _ in range(25)))
    stamps.sort()
    assert stamps[4] < 0.05  # the burst
    assert stamps[-1] == pytest.approx(1.0, abs=0.15)  # 20 more at 20/s
    strict = LocalRateLimiter(max_wait=0.1)
    await strict.acquire("q", rate=1, burst=1)
    with pytest.raises(RateLimitExceeded):
        await strict.acquire("q", rate=1, burst=1)  # would wait 1 s > max_wait


async def _send(platform: Platform) -> dict[str, Any]:
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": VARIABLES,
                "recipient": {"phone": "13800001234"},
            },
        )
    assert response.status_code == 202, response.text
    return await platform.wait_terminal(response.json()["id"])


async def test_failover_to_the_next_provider_on_transient_errors(platform: Platform) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    down = AlwaysFailing("sms", context, TransientChannelError("503 from gateway", code="503"))
    backup = ScriptedProvider("sms", context, [])
    platform.runtime.providers.replace("sms", [down, backup])
    message = await _send(platform)
    assert message["status"] == "delivered"
    assert message["provider"] == "scripted-sms"
    types = [e["type"] for e in message["events"]]
    assert types == [
        "accepted",
        "queued",
        "sending",
        "attempt_failed",
        "failover",
        "sent",
        "delivered",
    ]
    failed = message["events"][3]["detail"]
    assert failed["provider"] == "failing-sms"
    assert failed["code"] == "503"
    assert "latency_ms" in failed


async def test_open_circuit_is_skipped(platform: Platform) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    down = AlwaysFailing("sms", context, TransientChannelError("timeout", code="timeout"))
    backup = ScriptedProvider("sms", context, [])
    platform.runtime.providers.replace("sms", [down, backup])
    slot = platform.runtime.providers.slot("failing-sms")
    assert slot is not None
    open_circuit(slot.circuit)
    message = await _send(platform)
    assert message["provider"] == "scripted-sms"
    assert down.calls == 0
    assert message["events"][3]["detail"]["code"] == "circuit_open"


def test_settings_name_the_providers_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(TOML.replace("${ICC_TEST_SECRET}", "x"), encoding="utf-8")
    monkeypatch.setenv("ICC_PROVIDERS_FILE", str(path))
    assert Settings().providers_file == str(path)


async def test_a_provider_fault_tries_the_next_account(platform: Platform) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    no_template = AlwaysFailing(
        "sms", context, ProviderFault("no template here", code="no_template")
    )
    backup = ScriptedProvider("sms", context, [])
    platform.runtime.providers.replace("sms", [no_template, backup])
    message = await _send(platform)
    assert message["provider"] == "scripted-sms"
    assert message["events"][3]["detail"]["code"] == "no_template"
    assert message["events"][4]["type"] == "failover"
