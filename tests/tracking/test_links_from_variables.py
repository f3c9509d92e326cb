"""Only links to hosts the templates write out (or configured domains) become tracked links:
a URL that came in through a template variable (a transfer remark, a merchant's or a
counterparty's name) stays as it is, instead of /t/<token> on the bank's own domain
redirecting wherever the data pointed."""

from __future__ import annotations

import pytest

from app.tracking.links import TrackedHosts, track_content, written_hosts
from templates.renderer import render
from tests.conftest import Platform
from tests.tracking.common import MARKETING, links_of, send

EVIL = "https://evil.example/login"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_url_from_variable_data_is_not_served_from_the_bank_domain(
    platform: Platform,
) -> None:
    await platform.create_scenario(**MARKETING)
    body = {
        "scenario": "wealth_promo",
        "customer_id": "C1",
        "variables": {"product": f"W42 {EVIL}"},
        "recipient": {"phone": "13800001234"},
    }
    message_id = await send(platform, body)
    stored = await links_of(platform, message_id)
    assert [link.url for link in stored if link.url and "evil" in link.url] == []
    assert any(link.url and link.url.startswith("https://bank.cn/") for link in stored)
    async with platform.client("admin") as client:
        message = (await client.get(f"/v1/messages/{message_id}")).json()
    assert EVIL in message["content"]["sms"]["body"]


def test_the_hosts_a_template_writes_out() -> None:
    sources = [
        "详情见https://Bank.cn/w?id={{ product }}，拒收",
        {"url": "https://wx.bank.cn:8443/a", "fields": ["http://m.bank.cn."]},
        "https://{{ host }}/x https://bank{{ x }}.cn/ {{ url }}",
        None,
    ]
    # "bank" from https://bank{{ x }}.cn: what renders there is another host, never "bank"
    assert written_hosts(sources) == {"bank.cn", "wx.bank.cn", "m.bank.cn", "bank"}


@pytest.mark.parametrize(
    ("url", "tracked"),
    [
        ("https://bank.cn/w", True),
        ("https://BANK.cn:99/w", True),
        ("https://www.partner.example/", True),  # a configured domain's subdomain
        ("https://m.bank.cn/", False),  # written hosts count exactly
        (EVIL, False),
        ("https://bank.cn@evil.example/", False),
        ("https://evil.example\\@bank.cn/", False),
        ("https://[bank.cn/", False),
    ],
)
def test_which_links_are_tracked(url: str, tracked: bool) -> None:
    hosts = TrackedHosts(frozenset({"bank.cn"}), ("partner.example",))
    content, found = track_content(
        {"sms": {"body": f"见 {url} 。"}}, base_url="https://t.bank.cn", hosts=hosts
    )
    assert bool(found) is tracked
    assert (url in content["sms"]["body"]) is not tracked


@pytest.mark.parametrize(
    "source",
    [
        "详情 https://m.bank.cn{{ path }}",
        "详情 https://m.bank.cn{% if vip %}/vip{% else %}/std{% endif %}",
        "详情 https://m.bank.cn/{{ path }}",
    ],
)
def test_a_host_followed_by_a_variable_is_written(source: str) -> None:
    hosts = TrackedHosts(written_hosts([source]))
    assert hosts.written == frozenset({"m.bank.cn"})
    text = render(source, {"path": "/loan/1", "vip": True})
    content, links = track_content(
        {"sms": {"body": text}}, base_url="https://t.bank.cn", hosts=hosts
    )
    assert len(links) == 1
    assert "https://t.bank.cn/t/" in content["sms"]["body"]


def test_a_variable_extending_a_written_host_is_not_tracked() -> None:
    source = "详情 https://m.bank.cn{{ rest }}"
    hosts = TrackedHosts(written_hosts([source]))
    for rest in (".evil.com/x", "@evil.com/x", "evil.com"):
        text = render(source, {"rest": rest})
        _, links = track_content({"sms": {"body": text}}, base_url="https://t.bank.cn", hosts=hosts)
        assert links == [], rest
