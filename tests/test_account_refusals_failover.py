"""Refusals of a provider account rather than of the recipient (no balance left, a signature
or template not approved on this account, SMTP credentials rejected, an egress proxy refusing
us) are ``ProviderFault``: the next account of the channel is tried before the message falls
back to the next channel, and they count against the account's circuit breaker, except a
signature or template not approved there (``ContentRefused``): the account serves other
content."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiosmtplib
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.accounts import CircuitSettings
from channels.base import ProviderContext, SendResult
from channels.circuit import CircuitState
from channels.email import SmtpEmailProvider, classify_smtp_error
from channels.errors import (
    ContentRefused,
    PermanentChannelError,
    ProviderFault,
    TransientChannelError,
)
from channels.simulator.aliyun import AliyunSmsSimulator
from channels.simulator.smtp import SmtpSimulator
from channels.simulator.tencent import TencentSmsSimulator
from channels.sms.aliyun import AliyunSmsProvider
from channels.sms.aliyun import classify as aliyun_classify
from channels.sms.tencent import TencentSmsProvider
from channels.sms.tencent import classify as tencent_classify
from tests.delivery_attempts import Recording, attempt, claimed, registry

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SMS_CONTENT: dict[str, Any] = {
    "body": "【示例银行】您尾号1234的账户支出1,200.00元",
    "provider_templates": {
        "aliyun_sms": {"template_code": "SMS_154950909", "params": {"tail": "1234"}},
        "tencent_sms": {"template_code": "1234567", "params": {"tail": "1234"}},
    },
}


@pytest.fixture
async def sims() -> AsyncIterator[tuple[AliyunSmsSimulator, TencentSmsSimulator, TestServer]]:
    aliyun = AliyunSmsSimulator(credentials={"kid": "ksecret"})
    tencent = TencentSmsSimulator(credentials={"sid": "skey"}, sdk_app_ids=["1400000000"])
    app = web.Application()
    aliyun.add_routes(app, prefix="/aliyun")
    tencent.add_routes(app, prefix="/tencent")

    async def proxy_auth_expired(request: web.Request) -> web.Response:
        return web.Response(status=407, text="<html>Proxy Authentication Required</html>")

    app.router.add_post("/egress-proxy/", proxy_auth_expired)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield aliyun, tencent, server
    finally:
        await server.close()


@pytest.mark.parametrize(
    "code",
    [
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.OUT_OF_SERVICE",
        "isv.PRODUCT_UN_SUBSCRIPT",
        "isv.ACCOUNT_ABNORMAL",
    ],
)
async def test_an_aliyun_account_refusal_fails_over_to_the_backup_account(
    sims: tuple[AliyunSmsSimulator, TencentSmsSimulator, TestServer], code: str
) -> None:
    aliyun_sim, _, server = sims
    aliyun = AliyunSmsProvider(
        account="aliyun-main",
        channel="sms",
        settings={
            "access_key_id": "kid",
            "access_key_secret": "ksecret",
            "sign_name": "示例银行",
            "endpoint": str(server.make_url("/aliyun")),
        },
        context=ProviderContext(),
    )
    backup = Recording("tencent-backup")
    try:
        aliyun_sim.force(code)
        attempts = await attempt(
            registry((aliyun, {}), (backup, {})),
            claimed("m1", "sms", {"phone": "13800138000"}, SMS_CONTENT),
        )
    finally:
        await aliyun.close()
    assert isinstance(attempts[0].error, ProviderFault)
    assert attempts[0].error.code == code
    assert backup.sent == ["m1"], f"backup never tried: {[a.error for a in attempts]}"


@pytest.mark.parametrize(
    "code",
    [
        "FailedOperation.InsufficientBalanceInSmsPackage",
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.SignatureIncorrectOrUnapproved",
    ],
)
async def test_a_tencent_account_refusal_fails_over_to_the_backup_account(
    sims: tuple[AliyunSmsSimulator, TencentSmsSimulator, TestServer], code: str
) -> None:
    _, tencent_sim, server = sims
    tencent = TencentSmsProvider(
        account="tencent-main",
        channel="sms",
        settings={
            "secret_id": "sid",
            "secret_key": "skey",
            "sms_sdk_app_id": "1400000000",
            "sign_name": "示例银行",
            "endpoint": str(server.make_url("/tencent")),
        },
        context=ProviderContext(),
    )
    backup = Recording("aliyun-backup")
    try:
        tencent_sim.force(code)
        attempts = await attempt(
            registry((tencent, {}), (backup, {})),
            claimed("m1", "sms", {"phone": "13800138000"}, SMS_CONTENT),
        )
    finally:
        await tencent.close()
    assert isinstance(attempts[0].error, ProviderFault)
    assert attempts[0].error.code == code
    assert backup.sent == ["m1"], f"backup never tried: {[a.error for a in attempts]}"


async def test_smtp_credentials_rejected_fail_over_to_the_backup_relay() -> None:
    with SmtpSimulator(username="icc", password="right") as server:
        primary = SmtpEmailProvider(
            account="smtp-main",
            channel="email",
            settings={
                "host": "127.0.0.1",
                "port": server.port,
                "security": "none",
                "from_address": "noreply@bank.example",
                "helo_hostname": "icc.test",
                "username": "icc",
                "password": "rotated-yesterday",
                "timeout": 5,
            },
            context=ProviderContext(),
        )
        backup = Recording("smtp-backup", channel="email")
        try:
            attempts = await attempt(
                registry((primary, {}), (backup, {})),
                claimed(
                    "m1",
                    "email",
                    {"email": "alice@example.com"},
                    {"subject": "账户变动", "body": "支出1,200.00元"},
                ),
            )
        finally:
            await primary.close()
    assert isinstance(attempts[0].error, ProviderFault)
    assert attempts[0].error.code == "535"
    assert backup.sent == ["m1"], f"backup never tried: {[a.error for a in attempts]}"


async def test_tencent_behind_a_refusing_egress_proxy_fails_over_to_the_backup_account(
    sims: tuple[AliyunSmsSimulator, TencentSmsSimulator, TestServer],
) -> None:
    """Tencent Cloud API answers HTTP 200 even for errors: another status comes from
    something in between (a bank's egress proxy whose credentials expired: 407), not from
    the recipient."""
    _, _, server = sims
    tencent = TencentSmsProvider(
        account="tencent-main",
        channel="sms",
        settings={
            "secret_id": "sid",
            "secret_key": "skey",
            "sms_sdk_app_id": "1400000000",
            "sign_name": "示例银行",
            "endpoint": str(server.make_url("/egress-proxy")),
        },
        context=ProviderContext(),
    )
    backup = Recording("aliyun-backup")
    try:
        attempts = await attempt(
            registry((tencent, {}), (backup, {})),
            claimed("m1", "sms", {"phone": "13800138000"}, SMS_CONTENT),
        )
    finally:
        await tencent.close()
    assert isinstance(attempts[0].error, ProviderFault)
    assert attempts[0].error.code == "http_407"
    assert backup.sent == ["m1"], f"backup never tried: {[a.error for a in attempts]}"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiosmtplib.SMTPConnectResponseError(554, "no service for you"), ProviderFault),
        (aiosmtplib.SMTPHeloError(550, "HELO name refused"), ProviderFault),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), ProviderFault),
        (aiosmtplib.SMTPAuthenticationError(534, "web login required"), ProviderFault),
        (aiosmtplib.SMTPAuthenticationError(530, "authentication required"), ProviderFault),
        (aiosmtplib.SMTPSenderRefused(550, "sender not allowed", "noreply@x.cn"), ProviderFault),
        (aiosmtplib.SMTPNotSupported("no AUTH"), ProviderFault),
        (aiosmtplib.SMTPAuthenticationError(454, "try later"), TransientChannelError),
        (aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@x.cn"), PermanentChannelError),
        (aiosmtplib.SMTPDataError(554, "content rejected"), PermanentChannelError),
    ],
)
def test_smtp_refusals_before_a_recipient_is_named_are_the_account_s(
    exc: Exception, kind: type[Exception]
) -> None:
    error = classify_smtp_error(exc)
    assert type(error) is kind


class Refused(Recording):
    """An account out of balance: refuses every send."""

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        raise ProviderFault("no balance left", code="isv.AMOUNT_NOT_ENOUGH")


async def test_account_refusals_open_the_account_s_circuit() -> None:
    refused, backup = Refused("aliyun-main"), Recording("tencent-backup")
    circuit = CircuitSettings(min_requests=2, error_rate=0.5)
    providers = registry((refused, {"circuit": circuit}), (backup, {}))
    for message_id in ("m1", "m2", "m3"):
        await attempt(providers, claimed(message_id, "sms", {"phone": "13800138000"}, {}))
    slot = providers.route("sms")[0]
    assert slot.name == "aliyun-main"
    assert slot.circuit.state is CircuitState.open
    assert backup.sent == ["m1", "m2", "m3"]


class TemplateRefused(Recording):
    """An account on which one template is not approved."""

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        raise ContentRefused("template not approved here", code="isv.SMS_TEMPLATE_ILLEGAL")


async def test_a_template_not_approved_on_an_account_does_not_open_its_circuit() -> None:
    """One scenario's unapproved template must not take the account from every other (account
    notices included): the message still fails over, the circuit stays closed."""
    refused, backup = TemplateRefused("aliyun-main"), Recording("tencent-backup")
    circuit = CircuitSettings(min_requests=2, error_rate=0.5)
    providers = registry((refused, {"circuit": circuit}), (backup, {}))
    for message_id in ("m1", "m2", "m3"):
        await attempt(providers, claimed(message_id, "sms", {"phone": "13800138000"}, {}))
    slot = providers.route("sms")[0]
    assert slot.name == "aliyun-main"
    assert slot.circuit.state is CircuitState.closed
    assert backup.sent == ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("aliyun", "isv.SMS_TEMPLATE_ILLEGAL"),
        ("aliyun", "isv.SMS_SIGNATURE_ILLEGAL"),
        ("tencent", "FailedOperation.TemplateIncorrectOrUnapproved"),
        ("tencent", "FailedOperation.SignatureIncorrectOrUnapproved"),
    ],
)
def test_unapproved_content_is_content_refused(kind: str, code: str) -> None:
    error = aliyun_classify(code, "", 200) if kind == "aliyun" else tencent_classify(code, "")
    assert isinstance(error, ContentRefused)
    assert not isinstance(aliyun_classify("isv.AMOUNT_NOT_ENOUGH", "", 200), ContentRefused)
