"""Email over SMTP (``smtp``): MIME built with the standard library (channels/email_mime.py),
sent through a pool of reused aiosmtplib connections (channels/smtp_pool.py).

Settings (``[providers.settings]``): ``host`` and ``port`` (the account's ``endpoint``,
``smtp://host:port`` or ``smtps://host:port``, wins over both; the port defaults by security
to 587, 465 or 25), ``security`` (``starttls``, ``tls`` for implicit TLS, or ``none``),
``username`` and ``password`` (AUTH when given), ``from_address``, ``from_name``,
``reply_to``, ``pool_size`` (4), ``timeout`` (30 s per SMTP command), ``validate_certs``
(true), ``ca_file`` (a bank's internal CA), ``helo_hostname`` (default: this host's FQDN),
``list_unsubscribe_mailto``, ``list_unsubscribe_url`` (may contain ``{message_id}``).
Unknown settings are refused, so a typo fails at start.

Content: ``subject``, ``body`` (text), optional ``html`` (then multipart/alternative),
``marketing`` (adds ``List-Unsubscribe``) and ``unsubscribe_url`` (per message, wins over the
``list_unsubscribe_url`` setting; it also gets the RFC 8058 one-click header).

Errors: 4xx replies, connection failures and timeouts are transient; 5xx replies are permanent;
the reply code is the error's ``code``. A 5xx before any recipient is named (the greeting, EHLO,
AUTH, MAIL FROM) and a server lacking what the account needs (AUTH, STARTTLS) are about this
account, not the recipient (``ProviderFault``): the next account of the channel is tried. A
send returns the Message-ID as provider message id; delivery is not known at send time
(``delivered=False``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Mapping
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import aiosmtplib
from aiosmtplib.typing import SMTPStatus
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from app.masking import mask_email
from channels.base import ChannelProvider, ProviderContext, SendResult
from channels.email_mime import build_message, is_web_url
from channels.errors import (
    ChannelError,
    PermanentChannelError,
    ProviderConfigError,
    ProviderFault,
    RecipientUnreachable,
    TransientChannelError,
)
from channels.smtp_pool import PooledConnection, SmtpPool, close_now

log = logging.getLogger("icc.channels.email")

Security = Literal["starttls", "tls", "none"]
_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
_HOSTNAME = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


class SmtpSettings(BaseModel):
    """The ``[providers.settings]`` of an smtp account (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(ge=1, le=65535)
    security: Security = "starttls"
    from_address: str
    from_name: str | None = None
    reply_to: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    pool_size: int = Field(default=4, ge=1, le=100)
    timeout: float = Field(default=30.0, gt=0)
    validate_certs: bool = True
    ca_file: str | None = None
    helo_hostname: str | None = None
    list_unsubscribe_mailto: str | None = None
    list_unsubscribe_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _endpoint(cls, data: Any) -> Any:
        """The account's ``endpoint`` wins over host and port, as it does for every provider
        (that is how the demo points accounts at the simulator); smtps:// means implicit TLS."""
        if not isinstance(data, Mapping):
            return data
        data = {k: v for k, v in data.items() if v is not None and v != ""}
        endpoint = data.pop("endpoint", None)
        if isinstance(endpoint, str):
            parts = urlsplit(endpoint if "://" in endpoint else f"smtp://{endpoint}")
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                raise ValueError("endpoint must look like smtp://host:port or smtps://host:port")
            data["host"] = parts.hostname
            if parts.scheme == "smtps":
                data["security"] = "tls"
            if parts.port:
                data["port"] = parts.port
        data.setdefault("port", _DEFAULT_PORTS.get(str(data.get("security", "starttls")), 587))
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        if isinstance(value, str) and ("\r" in value or "\n" in value):
            raise ValueError("must not contain line breaks")
        return value

    @field_validator("from_address", "reply_to", "list_unsubscribe_mailto")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        address = None if value is None else parse_address(value)
        if value is not None and address is None:
            raise ValueError(f"{value!r} is not a valid email address")
        return address

    @field_validator("helo_hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME.fullmatch(value):
            raise ValueError("must be a host name or an [address literal]")
        return value

    @field_validator("from_name")
    @classmethod
    def _display_name(cls, value: str | None) -> str | None:
        return " ".join((value or "").split()) or None  # tabs, form feeds... would not survive

    @field_validator("list_unsubscribe_url")
    @classmethod
    def _unsubscribe_template(cls, value: str | None) -> str | None:
        try:
            url = None if value is None else value.format(message_id="MSG")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may use only the {message_id} placeholder") from None
        if url is not None and not is_web_url(url):
            raise ValueError("must be an https:// (or http://) URL")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


def parse_settings(account: str, raw: Mapping[str, Any]) -> SmtpSettings:
    try:
        return SmtpSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise ProviderConfigError(f"smtp provider {account!r}: {problems}") from None


def _problem(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "settings"
    if error["type"] == "extra_forbidden":
        return f"{where}: not a setting of the smtp provider"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


# RFC 5322's dot-atom (also the SMTP simulator's quick address check)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
# local@domain of a dot-atom and a host name: nearly every address, unchanged by parsing
_PLAIN_ADDRESS = re.compile(rf"{DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def parse_address(value: str) -> str | None:
    """A plain ``local@domain`` address (an IDN domain turned to punycode), or None."""
    value = value.strip()
    if _PLAIN_ADDRESS.fullmatch(value) and "=?" not in value:  # "=?": maybe an encoded word
        return value
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or not local.isascii():
        return None
    try:
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
        return Address(addr_spec=f"{local}@{ascii_domain}").addr_spec
    except (ValueError, IndexError, UnicodeError, HeaderParseError):
        return None


# --- errors ------------------------------------------------------------------------------


def classify_smtp_error(exc: BaseException) -> ChannelError:
    """Transient or permanent, with the SMTP reply code (if any) as the error's code."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        detail = f"SMTP server replied {exc.code} {exc.message}"  # ChannelError masks it
        if not 500 <= exc.code < 600:
            return TransientChannelError(detail, code=str(exc.code))
        if isinstance(exc, _ACCOUNT_REFUSALS):
            return ProviderFault(detail, code=str(exc.code))
        return PermanentChannelError(detail, code=str(exc.code))
    if isinstance(exc, TimeoutError):
        return TransientChannelError(f"SMTP server timed out: {exc}", code="timeout")
    if isinstance(exc, OSError):  # refused, reset, closed (aiosmtplib's are ConnectionErrors)
        return TransientChannelError(f"SMTP connection failed: {exc}", code="connection")
    # The rest are mismatches between this account and the server (no AUTH, no STARTTLS...).
    return ProviderFault(f"SMTP server cannot serve this account: {exc}", code="unsupported")


# Refused before any recipient is named (the greeting, EHLO, AUTH: 530/534/535, MAIL FROM):
# about this account or relay, not the recipient, so another relay may still send.
_ACCOUNT_REFUSALS = (
    aiosmtplib.SMTPConnectResponseError,
    aiosmtplib.SMTPHeloError,
    aiosmtplib.SMTPAuthenticationError,
    aiosmtplib.SMTPSenderRefused,
)


class _StaleConnection(Exception):
    """A reused connection turned out closed before the server accepted anything."""


# --- the provider ------------------------------------------------------------------------


class SmtpEmailProvider(ChannelProvider):
    """Email through an SMTP server (a bank's relay or a mail service); see the module
    docstring for settings, content and error classification."""

    type_name = "smtp"
    channels = ("email",)
    max_length = None
    default_rate = 100.0  # a cautious relay default; set rate_per_second on the account

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        self.config = parse_settings(account, self.settings)
        self.send_timeout = self.config.timeout  # per command, but most take a fraction
        if self.config.username and self.config.security == "none":
            log.warning("smtp provider %r sends AUTH without TLS", account)
        self.pool = SmtpPool(self._open, self.config.pool_size)
        self._helo_name = self.config.helo_hostname
        self._mail_from = f"<{self.config.from_address}>".encode("ascii")
        # One TLS context for every connection: aiosmtplib would otherwise build one (and load
        # the system CA store) per connection.
        self._tls_context = _tls_context(account, self.config)

    async def send(
        self,
        *,
        to: str,
        content: Mapping[str, Any],
        idempotency_key: str,
        message_id: str,
    ) -> SendResult:
        recipient = parse_address(to)
        if recipient is None:
            raise RecipientUnreachable("not a deliverable email address", code="bad_address")
        msgid, data = build_message(
            self.config,
            to=recipient,
            content=content,
            idempotency_key=idempotency_key,
            message_id=message_id,
        )
        try:
            await self._deliver(recipient, data)
        except (aiosmtplib.SMTPException, OSError) as exc:
            error = classify_smtp_error(exc)
            log.info(
                "smtp send failed",
                extra={"provider": self.account, "code": error.code, "to": mask_email(to)},
            )
            raise error from exc
        return SendResult(provider_message_id=msgid, delivered=False)

    async def _deliver(self, to: str, payload: bytes) -> None:
        for attempt in range(2):
            conn = await self.pool.acquire()
            reusable = False
            try:
                await self._transact(conn, to, payload)
                reusable = True
                return
            except _StaleConnection as stale:
                self.pool.drop_idle()
                if attempt:
                    raise cast(BaseException, stale.__cause__) from None
            except aiosmtplib.SMTPResponseException:
                reusable = await _reset(conn.smtp)
                raise
            finally:
                self.pool.release(conn, reusable=reusable)

    async def _transact(self, conn: PooledConnection, to: str, payload: bytes) -> None:
        # MAIL and RCPT written by hand: the addresses are parsed already (parse_address),
        # and smtp.mail() and smtp.rcpt() would parse each again, a tenth of a pooled send.
        smtp = conn.smtp
        size = [b"SIZE=%d" % len(payload)] if smtp.supports_extension("size") else []
        try:
            reply = await smtp.execute_command(b"MAIL", b"FROM:" + self._mail_from, *size)
            if reply.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(
                    reply.code, reply.message, self.config.from_address
                )
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException) as exc:
            # Nothing was accepted yet, so a fresh connection cannot cause a duplicate.
            closing = not isinstance(exc, aiosmtplib.SMTPResponseException) or exc.code == 421
            if conn.reused and closing:
                raise _StaleConnection from exc
            raise
        reply = await smtp.execute_command(b"RCPT", b"TO:<%s>" % to.encode("ascii"))
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, to)
        await smtp.data(payload)

    async def _open(self) -> aiosmtplib.SMTP:
        config = self.config
        if self._helo_name is None:
            self._helo_name = await asyncio.to_thread(socket.getfqdn)  # once, not per connection
        smtp = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            local_hostname=self._helo_name,
            timeout=config.timeout,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self._tls_context,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:  # plain SMTP without AUTH: _transact needs it
                await _greet(smtp)
        except BaseException:
            close_now(smtp)
            raise
        return smtp

    async def close(self) -> None:
        await self.pool.close()


def _tls_context(account: str, config: SmtpSettings) -> ssl.SSLContext | None:
    if config.security == "none":
        return None
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProviderConfigError(
            f"smtp provider {account!r}: setting 'ca_file' cannot be loaded: {exc}"
        ) from None
    if not config.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO where the server does not speak ESMTP (as aiosmtplib's mail() does)."""
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


async def _reset(smtp: aiosmtplib.SMTP) -> bool:
    """RSET after a refused command, so that the connection can serve the next message."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True
