"""The generic HTTP SMS gateway against a local stand-in of a bank's in-house platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer
from hypothesis import given
from hypothesis import strategies as st

from channels.base import ProviderContext
from channels.errors import PermanentChannelError, ProviderConfigError, TransientChannelError
from channels.simulator.sms_gateway import SmsGatewaySimulator
from channels.sms.http_gateway import DEFAULT_BODY_TEMPLATE, HttpSmsProvider

TOKEN = "gateway-token"
TEXT = '【示例银行】您尾号1234的账户支出1,200.00元。"理财"专享\n回TD退订'
CHECKED = {
    "success_field": "code",
    "success_value": "0",
    "message_id_field": "data.msgid",
}


class Harness:
    def __init__(self, simulator: SmsGatewaySimulator, server: BaseTestServer) -> None:
        self.simulator = simulator
        self.server = server
        self.providers: list[HttpSmsProvider] = []

    def make(self, **overrides: Any) -> HttpSmsProvider:
        settings = {
            "url": str(self.server.make_url("/gateway/sms")),
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "sign": "示例银行",
            **CHECKED,
            **overrides,
        }
        provider = make_provider(settings)
        self.providers.append(provider)
        return provider


def make_provider(settings: dict[str, Any]) -> HttpSmsProvider:
    return HttpSmsProvider(
        account="core-sms", channel="sms", settings=settings, context=ProviderContext()
    )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    simulator = SmsGatewaySimulator(token=TOKEN)
    app = web.Application()
    simulator.add_routes(app)
    async with TestServer(app, host="127.0.0.1") as server:
        harness = Harness(simulator, server)
        yield harness
        for provider in harness.providers:
            await provider.close()


async def send(provider: HttpSmsProvider, text: str = TEXT) -> Any:
    return await provider.send(
        to="13800138000", content={"body": text}, idempotency_key="k", message_id="msg-1"
    )


async def test_free_text_is_posted_with_the_default_template(harness: Harness) -> None:
    result = await send(harness.make())
    [received] = harness.simulator.received
    assert received.method == "POST"
    assert received.payload == {
        "to": "13800138000",
        "text": TEXT,
        "message_id": "msg-1",
        "sign": "示例银行",
    }
    assert received.headers["Authorization"] == f"Bearer {TOKEN}"
    assert result.provider_message_id == received.msgid


async def test_a_custom_template_shapes_the_body(harness: Harness) -> None:
    template = (
        '{"header": {"channel": "icc", "sign": {{ sign|tojson }}}, '
        '"sms": [{"mobile": {{ to|tojson }}, "content": {{ text|tojson }}, '
        '"bizId": {{ message_id|tojson }}}]}'
    )
    await send(harness.make(body_template=template))
    payload = harness.simulator.received[0].payload
    assert payload["sms"] == [{"mobile": "13800138000", "content": TEXT, "bizId": "msg-1"}]
    assert payload["header"] == {"channel": "icc", "sign": "示例银行"}


async def test_get_sends_query_parameters(harness: Harness) -> None:
    template = '{"mobile": {{ to|tojson }}, "msg": {{ text|tojson }}, "n": 1}'
    await send(harness.make(method="get", body_template=template))
    [received] = harness.simulator.received
    assert received.method == "GET"
    assert received.payload == {"mobile": "13800138000", "msg": TEXT, "n": "1"}


async def test_get_merges_the_parameters_into_the_urls_own_query(harness: Harness) -> None:
    url = str(harness.server.make_url("/gateway/sms")) + "?account=icc&msg=stale"
    template = '{"mobile": {{ to|tojson }}, "msg": {{ text|tojson }}}'
    await send(harness.make(url=url, method="GET", body_template=template))
    [received] = harness.simulator.received
    assert received.payload == {"account": "icc", "mobile": "13800138000", "msg": TEXT}


_TEXTS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1).filter(str.strip)
_SIGNS = st.sampled_from(["", "示例银行", "<b>&'\"</b>"])


@given(to=st.text(), text=_TEXTS, message_id=st.text(), sign=_SIGNS)
def test_the_default_body_is_the_templates_rendering_byte_for_byte(
    to: str, text: str, message_id: str, sign: str
) -> None:
    """The default template is written out in code (no Jinja per message): same bytes as
    the template renders, whatever the text holds."""
    fast = make_provider({"url": "http://sms.bank.local/send", "sign": sign})
    built = fast.build_request(to=to, content={"body": text}, message_id=message_id)
    rendered = fast._template.render(to=to, text=text, message_id=message_id, sign=sign)
    assert built.content == rendered.encode()
    # a template that only differs in spacing takes the Jinja path: same JSON
    compact = DEFAULT_BODY_TEMPLATE.replace(", ", ",")
    jinja = make_provider(
        {"url": "http://sms.bank.local/send", "sign": sign, "body_template": compact}
    )
    again = jinja.build_request(to=to, content={"body": text}, message_id=message_id)
    assert again.content != built.content
    assert orjson.loads(again.content) == orjson.loads(built.content)


def test_requests_are_built_once_per_account_and_copied_per_message() -> None:
    provider = make_provider(
        {"url": "https://sms.bank.local:8443/send", "headers": {"Authorization": "Bearer t"}}
    )
    first = provider.build_request(to="13800138000", content={"body": "a"}, message_id="m1")
    first.headers["x-changed"] = "1"
    second = provider.build_request(to="13800138000", content={"body": "b"}, message_id="m2")
    assert second.headers == {
        "host": "sms.bank.local:8443",
        "content-type": "application/json",
        "Authorization": "Bearer t",
    }
    assert second.url == "https://sms.bank.local:8443/send"


async def test_without_a_success_field_any_2xx_is_success(harness: Harness) -> None:
    harness.simulator.force("1001")
    result = await send(harness.make(success_field=None, message_id_field=None))
    assert result.provider_message_id == "msg-1"


async def test_a_refusal_in_the_body_is_permanent_with_its_code(harness: Harness) -> None:
    harness.simulator.force("1001")
    with pytest.raises(PermanentChannelError) as caught:
        await send(harness.make())
    assert caught.value.code == "1001"


async def test_codes_listed_as_transient_are_retried(harness: Harness) -> None:
    harness.simulator.force("9999")
    with pytest.raises(TransientChannelError) as caught:
        await send(harness.make(transient_codes=["9999"]))
    assert caught.value.code == "9999"


@pytest.mark.parametrize(
    ("code", "transient"),
    [("http_503", True), ("http_500", True), ("http_429", True), ("http_400", False)],
)
async def test_http_statuses(harness: Harness, code: str, transient: bool) -> None:
    harness.simulator.force(code)
    with pytest.raises(PermanentChannelError if not transient else TransientChannelError) as e:
        await send(harness.make())
    assert e.value.code == code
    assert e.value.transient is transient


async def test_a_wrong_gateway_token_is_permanent(harness: Harness) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await send(harness.make(headers={"Authorization": "Bearer nope"}))
    assert caught.value.code == "http_401"


async def test_a_timeout_is_transient(harness: Harness) -> None:
    harness.simulator.faults.latency = 1.0
    with pytest.raises(TransientChannelError) as caught:
        await send(harness.make(timeout=0.1))
    assert caught.value.code == "timeout"


async def test_a_success_value_of_another_type_still_matches(harness: Harness) -> None:
    await send(harness.make(success_value=0))  # the gateway answers "0"
    assert len(harness.simulator.received) == 1


async def test_an_empty_text_is_permanent(harness: Harness) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await send(harness.make(), text="  ")
    assert caught.value.code == "no_body"


async def test_text_cannot_break_out_of_the_json(harness: Harness) -> None:
    hostile = '", "to": "13900000000", "x": "{{ 7*7 }}'
    await send(harness.make(), text=hostile)
    payload = harness.simulator.received[0].payload
    assert payload["to"] == "13800138000"
    assert payload["text"] == hostile


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"url": None}, "url"),
        ({"url": "gateway.bank.local/sms"}, "url"),
        ({"method": "PUT"}, "method"),
        ({"headers": {"X-Count": 1}}, "headers"),
        ({"body_template": "{{ to "}, "body_template"),
        ({"body_template": "to={{ to }}"}, "body_template"),
        ({"body_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}, "body_template"),
        ({"method": "GET", "body_template": "[{{ to|tojson }}]"}, "body_template"),
        ({"transient_codes": "9999"}, "transient_codes"),
        ({"timeout": "10"}, "timeout"),
    ],
)
def test_settings_are_validated(overrides: dict[str, Any], named: str) -> None:
    settings = {"url": "https://sms.bank.local/send", **overrides}
    with pytest.raises(ProviderConfigError, match=named):
        make_provider({k: v for k, v in settings.items() if v is not None})


def test_metadata() -> None:
    assert HttpSmsProvider.type_name == "http_sms"
    assert HttpSmsProvider.channels == ("sms",)
    assert HttpSmsProvider.max_length == 500
    assert HttpSmsProvider.default_rate is not None
