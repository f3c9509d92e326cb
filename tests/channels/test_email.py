"""The SMTP email provider against a real SMTP server (aiosmtpd, via the simulator)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from functools import partial
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from channels.accounts import parse_accounts
from channels.base import ProviderContext
from channels.email import SmtpEmailProvider, classify_smtp_error, parse_address
from channels.email_mime import build_message
from channels.errors import (
    PermanentChannelError,
    ProviderConfigError,
    RecipientUnreachable,
    TransientChannelError,
)
from channels.registry import ProviderRegistry
from channels.simulator import smtp as simulator_smtp
from channels.simulator.smtp import SmtpSimulator

FROM_NAME = "示例银行信用卡中心"
SUBJECT = "您尾号1234的账户支出人民币1,200.00元，余额35,200.50元（交易提醒）"
CONTENT: dict[str, Any] = {
    "subject": SUBJECT,
    "body": "尊敬的客户：您尾号1234的账户今日支出1,200.00元。",
    "html": "<p>尊敬的客户：您尾号<b>1234</b>的账户今日支出1,200.00元。</p>",
}
MakeProvider = Callable[..., SmtpEmailProvider]
# The simulator serves AUTH without TLS on purpose; aiosmtpd warns about it on each connection.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def server() -> Iterator[SmtpSimulator]:
    with SmtpSimulator() as simulator:
        yield simulator


@pytest.fixture
async def make_provider() -> AsyncIterator[MakeProvider]:
    made: list[SmtpEmailProvider] = []

    def make(port: int, **settings: Any) -> SmtpEmailProvider:
        base = {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_address": "noreply@bank.example",
            "from_name": FROM_NAME,
            "helo_hostname": "icc.test",
            "timeout": 5,
        }
        provider = SmtpEmailProvider(
            account="smtp-test",
            channel="email",
            settings=base | settings,
            context=ProviderContext(),
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def send(provider: SmtpEmailProvider, to: str = "alice@example.com", **content: Any) -> str:
    result = await provider.send(
        to=to, content=CONTENT | content, idempotency_key="m1:email", message_id="m1"
    )
    assert result.delivered is False
    return result.provider_message_id


def decoded(raw_header: str) -> str:
    return str(make_header(decode_header(raw_header)))


def raw_header(message: EmailMessage, name: str) -> str:
    for key, value in message.raw_items():
        if key.lower() == name.lower():
            return str(value)
    raise KeyError(name)


# --- the message -------------------------------------------------------------------------


async def test_multipart_message_with_chinese_headers(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider_message_id = await send(make_provider(server.port))

    [mail] = server.received
    assert mail.mail_from == "noreply@bank.example"
    assert mail.rcpt_tos == ["alice@example.com"]
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert text.get_content().strip() == CONTENT["body"]
    assert html.get_content().strip() == CONTENT["html"]
    # On the wire the headers are RFC 2047 encoded words; decoded they are the Chinese text.
    assert raw_header(message, "Subject").isascii()
    assert decoded(raw_header(message, "Subject")) == SUBJECT
    assert message["Subject"] == SUBJECT
    assert message["From"].addresses[0].display_name == FROM_NAME
    assert message["From"].addresses[0].addr_spec == "noreply@bank.example"
    assert message["Message-ID"] == provider_message_id
    assert provider_message_id.endswith("@bank.example>")
    assert message["Date"] is not None
    assert message["X-ICC-Idempotency-Key"] == "m1:email"
    assert "List-Unsubscribe" not in message
    assert mail.data.isascii()  # 7-bit clean: no server needs 8BITMIME


async def test_text_only_without_html(server: SmtpSimulator, make_provider: MakeProvider) -> None:
    await send(make_provider(server.port), html=None)

    message = server.received[0].message
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == CONTENT["body"]


async def test_every_message_id_is_unique(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.port)
    ids = {await send(provider) for _ in range(5)}
    assert len(ids) == 5


async def test_list_unsubscribe_on_marketing_mail_only(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.port, list_unsubscribe_mailto="unsubscribe@bank.example")
    url = "https://bank.example/unsubscribe/" + "t" * 120 + "?m=m1"
    await send(provider, marketing=True, unsubscribe_url=url)
    await send(provider, marketing=False, unsubscribe_url=url)

    marketing, transactional = (mail.message for mail in server.received)
    links = marketing["List-Unsubscribe"]
    assert f"<{url}>" in links  # a long URL stays whole, never encoded or split
    assert "<mailto:unsubscribe@bank.example?subject=unsubscribe%20m1>" in links
    assert marketing["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "List-Unsubscribe" not in transactional
    assert "List-Unsubscribe-Post" not in transactional


async def test_unsubscribe_url_from_the_settings_template(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(
        server.port, list_unsubscribe_url="https://bank.example/u/{message_id}"
    )
    await send(provider, marketing=True)

    message = server.received[0].message
    assert message["List-Unsubscribe"] == "<https://bank.example/u/m1>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_mailto_only_unsubscribe_has_no_one_click_header(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.port, list_unsubscribe_mailto="unsubscribe@bank.example")
    await send(provider, marketing=True)

    message = server.received[0].message
    assert message["List-Unsubscribe"].startswith("<mailto:unsubscribe@bank.example")
    assert "List-Unsubscribe-Post" not in message


async def test_no_one_click_header_for_a_plain_http_url(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    await send(make_provider(server.port), marketing=True, unsubscribe_url="http://b.example/u")

    message = server.received[0].message
    assert message["List-Unsubscribe"] == "<http://b.example/u>"
    assert "List-Unsubscribe-Post" not in message


def test_a_long_ascii_subject_is_folded_within_line_limits() -> None:
    subject = "Statement " + "x" * 1200 + " ready"
    _, data = build_message(
        provider_with().config,
        to="a@example.com",
        content={"subject": subject, "body": "b"},
        idempotency_key="k",
        message_id="m",
    )
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    # encoded words fold under 78 columns, the first line with its header name too
    assert all(len(line) <= 78 for line in data.split(b"\r\n") if b"=?utf-8?b?" in line)
    assert BytesParser(policy=policy.default).parsebytes(data)["Subject"] == subject


async def test_reply_to(server: SmtpSimulator, make_provider: MakeProvider) -> None:
    await send(make_provider(server.port, reply_to="service@bank.example"))
    assert server.received[0].message["Reply-To"] == "service@bank.example"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"subject": ""}, "no subject"),
        ({"body": None}, "no text body"),
        ({"html": 3}, "html"),
        ({"marketing": True, "unsubscribe_url": "javascript:alert(1)"}, "https URL"),
    ],
)
async def test_bad_content_is_permanent(
    server: SmtpSimulator, make_provider: MakeProvider, content: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentChannelError, match=message) as caught:
        await send(make_provider(server.port), **content)
    assert caught.value.code == "bad_content"
    assert not server.received


@pytest.mark.parametrize("to", ["not-an-address", "a@@b.example", "张三@example.com", ""])
async def test_undeliverable_address(
    server: SmtpSimulator, make_provider: MakeProvider, to: str
) -> None:
    with pytest.raises(RecipientUnreachable):
        await send(make_provider(server.port), to=to)


PLAIN_ADDRESSES = [
    "a@b",
    "li.wei+statements@bank.example",
    "o'brien@mail.bank-example.com",
    "x!#$%&*/=?^_`{|}~-@b.cn",
    " padded@example.com ",
]
UNUSUAL_ADDRESSES = [
    "=?utf-8?q?bob?=@example.com",
    "=?us-ascii?q?ceo=40bank.com?=@bank.com",
    '"quoted local"@example.com',
    "a..b@example.com",
    ".a@example.com",
    "a@[127.0.0.1]",
    "li@例子.中国",
]


@pytest.mark.parametrize("address", PLAIN_ADDRESSES + UNUSUAL_ADDRESSES)
def test_the_quick_address_check_agrees_with_the_standard_parser(address: str) -> None:
    """Plain addresses skip the email package's parser: the result must be the same."""
    local, _, domain = address.strip().rpartition("@")
    domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    try:
        expected: str | None = Address(addr_spec=f"{local}@{domain}").addr_spec
    except (ValueError, IndexError, HeaderParseError):
        expected = None
    assert parse_address(address) == expected


async def test_mail_and_rcpt_carry_the_parsed_addresses_and_the_size(
    server: SmtpSimulator, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    handle_mail = server.handler.handle_MAIL

    async def spy(srv: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        seen.append(options)
        return await handle_mail(srv, session, envelope, address, options)

    monkeypatch.setattr(server.handler, "handle_MAIL", spy)
    provider = make_provider(server.port, pool_size=1)
    await send(provider, to=" li.wei@Bank.Example ")
    await send(provider, to="o'brien@bank.example")
    mails = list(server.received)
    assert [m.rcpt_tos for m in mails] == [["li.wei@Bank.Example"], ["o'brien@bank.example"]]
    assert {m.mail_from for m in mails} == {"noreply@bank.example"}
    # SIZE from the first message on: the connection greets the server when it opens
    assert seen == [[f"SIZE={len(m.data)}"] for m in mails]
    assert server.connections == 1


ADDRESS_ARGUMENTS = [
    "<a@b.com>",
    "<a@b.com> SIZE=123",
    " <li.wei+x@ex-ample.com>  BODY=8BITMIME SMTPUTF8",
    "<a@b.com>\tSIZE=1 ",
    "<a@b.com> (comment) SIZE=1",
    "<a@b.com>x",
    "<>",
    '<"q x"@b.com>',
    "<a@[1.2.3.4]>",
    "<a..b@c.com>",
    "<a@b..com>",
    "<@relay.example:a@b.com>",
    "a@b.com",
    "<a@b.com",
    "a@b.com>",
    "a@b.com> SIZE=1",
    "<=?utf-8?b?Ym9i?=@example.com>",
    "<a@=?utf-8?q?x?=.com> SIZE=1",
]


ADDRESS_ALPHABET = ' \t<>@."()[]:ab.-=?'


@settings(max_examples=300, deadline=None)
@given(arg=st.sampled_from(ADDRESS_ARGUMENTS) | st.text(alphabet=ADDRESS_ALPHABET, max_size=20))
def test_the_simulators_address_parser_agrees_with_aiosmtpds(arg: str) -> None:
    server = simulator_smtp.SimulatorSMTP(simulator_smtp.RecordingHandler())

    def outcome(parse: Callable[[str], object]) -> object:
        try:
            return parse(arg)
        except Exception as exc:  # aiosmtpd's parser trips on some inputs ("<"): so must ours
            return type(exc)

    assert outcome(server._getaddr) == outcome(partial(AiosmtpdSMTP._getaddr, server))


def lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def assert_display_name(parsed: EmailMessage, expected: str) -> None:
    if expected.isascii() and expected.isprintable():
        assert parsed["From"].addresses[0].display_name == expected
        return
    # RFC 2047 drops the fold between two encoded words; the standard address parser keeps it
    # as a space (its own generator's output reads back the same), decode_header does not.
    assert decoded(raw_header(parsed, "From")) == f"{expected} <noreply@bank.example>"


@settings(max_examples=150, deadline=None)
@given(
    subject=st.text(min_size=1).filter(str.strip),
    body=st.text(),
    html=st.none() | st.text(min_size=1),
    name=st.text(max_size=60).filter(lambda s: "\r" not in s and "\n" not in s),
)
@example(subject="=?utf-8?q?not_encoded?= " * 9, body=".\r\n..\n", html="<p>.</p>", name="a=?b")
def test_any_content_round_trips_through_the_standard_parser(
    subject: str, body: str, html: str | None, name: str
) -> None:
    config = provider_with(from_name=name).config
    content = {"subject": subject, "body": body, "html": html}
    msgid, data = build_message(
        config, to="a@example.com", content=content, idempotency_key="k", message_id="m"
    )

    assert data.isascii()
    assert not set(data.replace(b"\r\n", b"")) & {13, 10}  # CRLF only, no bare CR or LF
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    # encoded words fold under 78 columns, the first line with its header name too
    assert all(len(line) <= 78 for line in data.split(b"\r\n") if b"=?utf-8?b?" in line)
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    assert parsed.defects == []
    assert parsed["Subject"] == " ".join(subject.split())
    assert_display_name(parsed, " ".join(name.split()))
    assert parsed["From"].addresses[0].addr_spec == "noreply@bank.example"
    assert parsed["Message-ID"] == msgid
    parts = list(parsed.iter_parts()) if html else [parsed]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"][: len(parts)]
    assert lines(parts[0].get_content()) == lines(body)
    if html:
        assert lines(parts[1].get_content()) == lines(html)


async def test_idn_domain_goes_out_in_punycode(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    await send(make_provider(server.port), to="li@例子.中国")
    assert server.received[0].rcpt_tos == ["li@xn--fsqu00a.xn--fiqs8s"]


# --- connections -------------------------------------------------------------------------


async def test_auth(make_provider: MakeProvider) -> None:
    with SmtpSimulator(username="icc", password="s3cret-密码") as server:
        provider = make_provider(server.port, username="icc", password="s3cret-密码")
        await send(provider)
        assert server.received[0].authenticated

        wrong = make_provider(server.port, username="icc", password="wrong")
        with pytest.raises(PermanentChannelError) as caught:
            await send(wrong)
        assert caught.value.code == "535"
        assert "wrong" not in caught.value.detail
        assert len(server.received) == 1


async def test_the_pool_reuses_connections(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.port, pool_size=3)
    await asyncio.gather(*(send(provider, to=f"c{i}@example.com") for i in range(60)))

    assert len(server.received) == 60
    assert server.connections <= 3
    assert provider.pool.opened == server.connections


async def test_recovers_when_the_server_drops_connections(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.port, pool_size=2)
    await asyncio.gather(send(provider), send(provider))
    server.drop_connections()  # like a server restart: every pooled connection is dead
    await asyncio.gather(send(provider), send(provider))
    await send(provider)

    assert len(server.received) == 5
    assert server.connections <= 4


async def test_idle_connections_are_checked_with_noop(
    server: SmtpSimulator, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("channels.smtp_pool._IDLE_CHECK_SECONDS", 0.0)
    provider = make_provider(server.port, pool_size=1)
    await send(provider)
    await send(provider)  # NOOP answered: the same connection
    assert server.connections == 1
    server.drop_connections()
    await send(provider)  # NOOP fails: a new connection
    assert server.connections == 2
    assert len(server.received) == 3


async def test_recovers_from_a_per_connection_message_limit(make_provider: MakeProvider) -> None:
    with SmtpSimulator(max_messages_per_connection=2) as server:
        provider = make_provider(server.port, pool_size=1)
        for _ in range(5):
            await send(provider)  # every third MAIL gets 421 and a closed connection
        assert len(server.received) == 5
        assert server.connections == 3


async def test_550_is_permanent_and_keeps_the_connection(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.port, pool_size=1)
    server.force("RCPT", 550, text="5.1.1 <alice@example.com>: Recipient address rejected")
    with pytest.raises(PermanentChannelError) as caught:
        await send(provider)
    assert caught.value.code == "550"
    assert "alice@example.com" not in caught.value.detail  # masked
    assert not caught.value.transient

    await send(provider)  # RSET made the connection usable again
    assert len(server.received) == 1
    assert server.connections == 1


@pytest.mark.parametrize(("command", "code"), [("MAIL", 553), ("DATA", 554)])
async def test_other_5xx_are_permanent(
    server: SmtpSimulator, make_provider: MakeProvider, command: Any, code: int
) -> None:
    server.force(command, code)
    with pytest.raises(PermanentChannelError) as caught:
        await send(make_provider(server.port))
    assert caught.value.code == str(code)


@pytest.mark.parametrize(("command", "code"), [("DATA", 451), ("RCPT", 450), ("MAIL", 452)])
async def test_4xx_is_transient(
    server: SmtpSimulator, make_provider: MakeProvider, command: Any, code: int
) -> None:
    server.force(command, code)
    with pytest.raises(TransientChannelError) as caught:
        await send(make_provider(server.port))
    assert caught.value.code == str(code)
    assert caught.value.transient


async def test_connection_refused_is_transient(make_provider: MakeProvider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
        with pytest.raises(TransientChannelError) as caught:
            await send(make_provider(port))
    assert caught.value.code == "connection"


async def test_timeout_is_transient(make_provider: MakeProvider) -> None:
    with SmtpSimulator(latency=2.0) as server:
        with pytest.raises(TransientChannelError) as caught:
            await send(make_provider(server.port, timeout=0.2))
        assert caught.value.code == "timeout"


async def test_random_errors_from_the_simulator(make_provider: MakeProvider) -> None:
    with SmtpSimulator(error_rate=0.5, seed=7) as server:
        provider = make_provider(server.port)
        outcomes = await asyncio.gather(
            *(send(provider) for _ in range(40)), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, TransientChannelError)]
        assert 5 < len(failures) < 35
        assert len(server.received) == 40 - len(failures)


async def test_close_quits_pooled_connections(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.port)
    await send(provider)
    await provider.close()
    with pytest.raises(TransientChannelError):
        await send(provider)


async def test_auth_the_server_does_not_offer_is_permanent(
    server: SmtpSimulator, make_provider: MakeProvider
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await send(make_provider(server.port, username="icc", password="pw"))
    assert caught.value.code == "unsupported"


def test_recipients_refused_is_classified_by_its_code() -> None:
    def refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
        return aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(code, "no", "a@example.com")]
        )

    permanent, transient = classify_smtp_error(refused(550)), classify_smtp_error(refused(452))
    assert (permanent.transient, permanent.code) == (False, "550")
    assert (transient.transient, transient.code) == (True, "452")


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize(("mode", "security"), [("starttls", "starttls"), ("implicit", "tls")])
async def test_tls_with_auth(
    certificate: tuple[Path, Path], make_provider: MakeProvider, mode: Any, security: str
) -> None:
    tls = server_tls(certificate)
    with SmtpSimulator(username="icc", password="pw", tls_context=tls, tls=mode) as server:
        provider = make_provider(
            server.port,
            security=security,
            username="icc",
            password="pw",
            ca_file=str(certificate[0]),
        )
        await send(provider)
        assert server.received[0].authenticated


async def test_an_untrusted_certificate_is_refused(
    certificate: tuple[Path, Path], make_provider: MakeProvider
) -> None:
    with SmtpSimulator(tls_context=server_tls(certificate), tls="implicit") as server:
        with pytest.raises(TransientChannelError):
            await send(make_provider(server.port, security="tls"))
        await send(make_provider(server.port, security="tls", validate_certs=False))
        assert len(server.received) == 1


# --- settings ----------------------------------------------------------------------------


async def test_configured_through_a_providers_file(server: SmtpSimulator) -> None:
    text = f"""
[[providers]]
name = "relay"
type = "smtp"
channel = "email"
endpoint = "smtp://127.0.0.1:{server.port}"
[providers.settings]
host = "smtp.bank.example"
security = "none"
from_address = "noreply@bank.example"
from_name = "示例银行"
helo_hostname = "icc.test"
"""
    accounts = parse_accounts(text, source="providers.toml", env={})
    registry = ProviderRegistry.build(
        accounts, ProviderContext(), plugins={"smtp": SmtpEmailProvider}
    )
    [slot] = registry.route("email")
    try:
        await slot.provider.send(
            to="alice@example.com", content=CONTENT, idempotency_key="k", message_id="m"
        )
    finally:
        await registry.close()
    assert len(server.received) == 1  # the account's endpoint won over the host setting


def provider_with(**settings: Any) -> SmtpEmailProvider:
    base = {"host": "smtp.bank.example", "from_address": "noreply@bank.example"}
    return SmtpEmailProvider(
        account="mail", channel="email", settings=base | settings, context=ProviderContext()
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"host": None}, "host: Field required"),
        ({"from_address": None}, "from_address: Field required"),
        ({"from_address": "noreply"}, "not a valid email address"),
        ({"security": "ssl"}, "security: Input should be 'starttls', 'tls' or 'none'"),
        ({"port": 0}, "port: Input should be greater than or equal to 1"),
        ({"port": "smtp"}, "port: Input should be a valid integer"),
        ({"pool_size": 0}, "pool_size: Input should be greater than or equal to 1"),
        ({"timeout": -1}, "timeout: Input should be greater than 0"),
        ({"validate_certs": "maybe"}, "validate_certs: Input should be a valid boolean"),
        ({"username": "icc"}, "username and password go together"),
        ({"from_name": "银行\r\nBcc: x@evil.example"}, "from_name: must not contain line breaks"),
        ({"helo_hostname": "my host"}, "helo_hostname: must be a host name"),
        ({"reply_to": "a b c"}, "reply_to: 'a b c' is not a valid email address"),
        ({"list_unsubscribe_url": "https://b.example/{customer}"}, "only the {message_id}"),
        ({"list_unsubscribe_url": "ftp://b.example/u"}, "must be an https:// (or http://) URL"),
        ({"endpoint": "http://smtp.bank.example", "host": None}, "smtp://host:port"),
        ({"pool_sise": 4}, "pool_sise: not a setting of the smtp provider"),
        ({"ca_file": "/nonexistent/ca.pem"}, "'ca_file' cannot be loaded"),
    ],
)
def test_invalid_settings_fail_fast(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderConfigError, match="smtp provider 'mail'") as caught:
        provider_with(**settings)
    assert message in str(caught.value)


def test_settings_defaults_and_endpoint() -> None:
    config = provider_with(password=None).config
    assert (config.port, config.security, config.pool_size, config.validate_certs) == (
        587,
        "starttls",
        4,
        True,
    )
    implicit = provider_with(security="tls", port="2465").config
    assert (implicit.port, implicit.security) == (2465, "tls")
    from_endpoint = provider_with(endpoint="smtps://relay.bank.example:1465").config
    assert (from_endpoint.host, from_endpoint.port) == ("relay.bank.example", 1465)
    assert from_endpoint.security == "tls"
    simulator = provider_with(endpoint="smtp://127.0.0.1:2525", security="none").config
    assert (simulator.host, simulator.port, simulator.security) == ("127.0.0.1", 2525, "none")


def test_the_password_never_shows() -> None:
    provider = provider_with(username="icc", password="hunter2")
    assert "hunter2" not in repr(provider.config)
    with pytest.raises(ProviderConfigError) as caught:
        provider_with(username="icc", password="hunter2", port=-1)
    assert "hunter2" not in str(caught.value)


def test_class_metadata() -> None:
    assert SmtpEmailProvider.type_name == "smtp"
    assert SmtpEmailProvider.channels == ("email",)
    assert SmtpEmailProvider.max_length is None
    assert SmtpEmailProvider.default_rate
