"""A third-party provider installed through the icc.channels entry point sends messages."""

from __future__ import annotations

import importlib
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.runtime import Runtime
from app.scenarios import service as scenario_service
from channels.errors import ProviderConfigError
from channels.registry import load_plugins
from tests.conftest import VARIABLES, Platform, make_settings

PLUGIN = textwrap.dedent(
    '''
    """A bank's own pager gateway, as a third party would ship it."""
    from channels.base import ChannelProvider, SendResult
    from channels.errors import ProviderConfigError

    SENT = []


    class PagerProvider(ChannelProvider):
        type_name = "acme_pager"
        channels = ("sms",)
        max_length = 140
        default_rate = 10.0

        def __init__(self, *, account, channel, settings=None, context):
            super().__init__(account=account, channel=channel, settings=settings, context=context)
            if "tenant" not in self.settings:
                raise ProviderConfigError(f"acme_pager {account!r}: setting 'tenant' is required")

        async def send(self, *, to, content, idempotency_key, message_id):
            SENT.append((self.settings["tenant"], to, content["body"], idempotency_key))
            return SendResult(provider_message_id=f"pager-{len(SENT)}")
    '''
)


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[Any]:
    """Install a distribution the way pip would: a module and a dist-info with entry points."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_pager.py").write_text(PLUGIN, encoding="utf-8")
    dist = site / "acme_pager-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pager\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[icc.channels]\nacme_pager = acme_pager:PagerProvider\n", encoding="utf-8"
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("acme_pager")
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("acme_pager", None)
        importlib.invalidate_caches()


async def test_third_party_provider_sends_through_the_pipeline(
    installed_plugin: Any, tmp_path: Path, sqlite_template: Path
) -> None:
    assert load_plugins()["acme_pager"] is installed_plugin.PagerProvider
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[[providers]]\nname = "pager"\ntype = "acme_pager"\nchannel = "sms"\n'
        '[providers.settings]\ntenant = "branch-12"\n',
        encoding="utf-8",
    )
    db = tmp_path / "icc.db"
    shutil.copy(sqlite_template, db)
    scenario_service.clear_cache()
    runtime = Runtime(
        make_settings(f"sqlite:///{db}", None, providers_file=str(providers)), run_workers=True
    )
    await runtime.start()
    try:
        platform = Platform("sqlite", runtime)
        await platform.create_keys()
        await platform.create_scenario(
            channels=["sms"], templates={"sms": {"body": "到账{{ amount }}元"}}
        )
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
        message = await platform.wait_terminal(response.json()["id"])
    finally:
        await runtime.close()
        scenario_service.clear_cache()
    assert message["status"] == "sent"
    assert message["provider"] == "pager"
    assert message["provider_message_id"] == "pager-1"
    assert [
        ("branch-12", "13800001234", "到账1200.00元", f"{message['id']}:sms")
    ] == installed_plugin.SENT


def test_third_party_settings_are_checked_at_start(installed_plugin: Any, tmp_path: Path) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[[providers]]\nname = "pager"\ntype = "acme_pager"\nchannel = "sms"\n', encoding="utf-8"
    )
    settings = make_settings("sqlite:///unused.db", None, providers_file=str(providers))
    with pytest.raises(ProviderConfigError, match="setting 'tenant' is required"):
        Runtime(settings, run_workers=True)


def test_two_plugins_with_one_name_fail_fast(installed_plugin: Any, tmp_path: Path) -> None:
    site = tmp_path / "site2"
    (site / "copycat-1.0.dist-info").mkdir(parents=True)
    (site / "copycat.py").write_text(
        "from channels.sandbox import SandboxProvider as Copy\n", encoding="utf-8"
    )
    (site / "copycat-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: copycat\nVersion: 1.0\n"
    )
    (site / "copycat-1.0.dist-info" / "entry_points.txt").write_text(
        "[icc.channels]\nacme_pager = copycat:Copy\n", encoding="utf-8"
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        with pytest.raises(ProviderConfigError, match="two channel plugins are named 'acme_pager'"):
            load_plugins()
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("copycat", None)
        importlib.invalidate_caches()
