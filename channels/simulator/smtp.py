"""A local SMTP server (aiosmtpd) for tests, the demo and benchmarks: it records what it
receives and can be told to be slow, to fail at random, to answer the next commands with
given codes, to close connections after N messages, or to drop every open connection.

It runs in a background thread (aiosmtpd's Controller), so it serves both synchronous callers
and event loops. TLS (STARTTLS or implicit) is served when the caller passes an SSLContext: the
simulator makes no certificate itself (the ``cryptography`` package is not a dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import random
import re
import signal
import socket
import ssl
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import cached_property
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from channels.email import DOT_ATOM

HOST = "127.0.0.1"
Command = Literal["MAIL", "RCPT", "DATA"]
TlsMode = Literal["starttls", "implicit"]

_REPLY_TEXT = {
    421: "4.7.0 Service not available, closing channel",
    450: "4.2.0 Mailbox unavailable, try again later",
    451: "4.3.0 Local error in processing",
    452: "4.3.1 Insufficient system storage",
    550: "5.1.1 Mailbox unavailable",
    552: "5.3.4 Message size exceeds fixed limit",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.7.1 Transaction failed",
}


@dataclass
class ReceivedMail:
    """One accepted mail: its envelope and raw bytes, parsed on first access."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    authenticated: bool

    @cached_property
    def message(self) -> EmailMessage:
        # Parsed lazily, so that benchmarks do not pay for parsing on the server side.
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


class RecordingHandler:
    """aiosmtpd handler: accepts and records mail; injects latency, random failures on DATA,
    forced replies and a per-connection message limit."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        error_rate: float = 0.0,
        error_code: int = 451,
        max_messages_per_connection: int | None = None,
        record: bool = True,
        max_records: int = 10_000,
        seed: int | None = None,
    ) -> None:
        self.latency = latency
        self.error_rate = error_rate
        self.error_code = error_code
        self.max_messages_per_connection = max_messages_per_connection
        self.record = record
        # Bounded, so that a long-running demo simulator does not grow without end.
        self.received: deque[ReceivedMail] = deque(maxlen=max_records)
        self.accepted = 0
        self._random = random.Random(seed)
        self._forced: deque[tuple[Command, str]] = deque()
        self._lock = threading.Lock()  # tests force replies from another thread
        self._per_session: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def force(
        self, command: Command, code: int, *, times: int = 1, text: str | None = None
    ) -> None:
        """Answer the next ``times`` ``command``s with ``code`` instead of accepting them."""
        reply = f"{code} {text or _REPLY_TEXT.get(code, 'Forced reply')}"
        with self._lock:
            self._forced.extend([(command, reply)] * times)

    def _take_forced(self, command: Command) -> str | None:
        with self._lock:
            for i, (forced_command, reply) in enumerate(self._forced):
                if forced_command == command:
                    del self._forced[i]
                    return reply
        return None

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        forced = self._take_forced("MAIL")
        if forced is not None:
            return forced
        limit = self.max_messages_per_connection
        if limit is not None and self._per_session.get(session, 0) >= limit:
            # The way MTAs enforce a per-connection limit: 421, then close the connection
            # (the close runs after the reply is written).
            server.loop.call_soon(server.transport.close)
            return "421 4.7.0 Too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        forced = self._take_forced("RCPT")
        if forced is not None:
            return forced
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        forced = self._take_forced("DATA")
        if forced is not None:
            return forced
        if self.error_rate and self._random.random() < self.error_rate:
            return f"{self.error_code} {_REPLY_TEXT.get(self.error_code, 'Simulated failure')}"
        self._per_session[session] = self._per_session.get(session, 0) + 1
        self.accepted += 1
        if self.record:
            mail = ReceivedMail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content or b"",
                authenticated=bool(session.authenticated),
            )
            self.received.append(mail)
        return f"250 2.0.0 OK queued as {self.accepted}"


# <local@domain> of dot-atoms, then the parameters (not a comment): nearly every MAIL and RCPT
_PLAIN_ANGLE_ADDR = re.compile(rf"[ \t]*<({DOT_ATOM}@{DOT_ATOM})>(?:[ \t]+([^ \t(].*)?)?", re.S)


class SimulatorSMTP(SMTP):
    """aiosmtpd's server with a quicker address parser for plain addresses: aiosmtpd's own
    defines a typing.Protocol class on every MAIL and RCPT and runs the email package's
    header parser, a fifth of the server's CPU per message on a kept connection. Anything
    but ``<dot-atom@dot-atom> [params]`` (and anything with "=?", which that parser
    decodes as RFC 2047 words) still goes through aiosmtpd's parser."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = None if "=?" in arg else _PLAIN_ANGLE_ADDR.fullmatch(arg)  # encoded words
        if match is None:
            address: tuple[str | None, str | None] = super()._getaddr(arg)
            return address
        addr, rest = match.group(1), match.group(2) or ""
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest


class _CountingController(Controller):
    """Counts the connections the server accepts and keeps the live ones, to drop them."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.connections = 0
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()

    def factory(self) -> Any:
        server = SimulatorSMTP(self.handler, **self.SMTP_kwargs)
        self.connections += 1
        self.live.add(server)
        return server


class SmtpSimulator:
    """An SMTP server on the loopback interface, in a background thread: ``start()``,
    send to ``host``:``port``, read ``received``, ``stop()``. AUTH (PLAIN/LOGIN) is required
    when ``username`` is given."""

    def __init__(
        self,
        *,
        host: str = HOST,
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        tls: TlsMode = "starttls",
        server_hostname: str = "smtp.simulator.test",
        **handler_options: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.handler = RecordingHandler(**handler_options)
        self._credentials = (username, password) if username is not None else None
        self._tls_context = tls_context
        self._tls = tls
        # A fixed server name: without one aiosmtpd resolves the host's FQDN on every
        # connection, which would bill a DNS lookup to each new connection.
        self._server_hostname = server_hostname
        self._controller: _CountingController | None = None
        self._baseline_connections = 0

    def _smtp_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"server_hostname": self._server_hostname}
        if self._credentials is not None:
            options |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                # aiosmtpd only counts STARTTLS as TLS: AUTH would be refused on plain and
                # on implicit-TLS connections.
                "auth_require_tls": self._tls_context is not None and self._tls == "starttls",
            }
        if self._tls_context is not None:
            if self._tls == "implicit":
                options["ssl_context"] = self._tls_context
            else:
                options |= {"tls_context": self._tls_context, "require_starttls": True}
        return options

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        assert self._credentials is not None
        username, password = self._credentials
        ok = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, username.encode())
            and hmac.compare_digest(auth_data.password, (password or "").encode())
        )
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    def start(self) -> None:
        _quiet_aiosmtpd()
        if self.port == 0:
            self.port = _free_port(self.host)
        controller = _CountingController(
            self.handler,
            hostname=self.host,
            port=self.port,
            loop=_new_event_loop(),
            **self._smtp_options(),
        )
        controller.start()
        # Controller.start() opens one connection of its own to check the server is up.
        self._baseline_connections = controller.connections
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSimulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def received(self) -> deque[ReceivedMail]:
        return self.handler.received

    @property
    def connections(self) -> int:
        """Connections accepted since start (the controller's own check not counted)."""
        if self._controller is None:
            return 0
        return int(self._controller.connections - self._baseline_connections)

    def force(
        self, command: Command, code: int, *, times: int = 1, text: str | None = None
    ) -> None:
        self.handler.force(command, code, times=times, text=text)

    def drop_connections(self, timeout: float = 5.0) -> None:
        """Close every open connection at once, as a restarting server would."""
        controller = self._controller
        if controller is None:
            return

        async def close_all() -> None:
            for server in list(controller.live):
                if server.transport is not None:
                    server.transport.close()

        asyncio.run_coroutine_threadsafe(close_all(), controller.loop).result(timeout)


class _DropLoginDataWarning(logging.Filter):
    """aiosmtpd 1.4 warns on every AUTH that its own code sets a deprecated attribute."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


def _quiet_aiosmtpd() -> None:
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, _DropLoginDataWarning) for f in logger.filters):
        logger.addFilter(_DropLoginDataWarning())


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (uvicorn[standard] brings it), as the platform's own
    processes run: aiosmtpd's per-line reads and replies are mostly event-loop work."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _free_port(host: str) -> int:
    # aiosmtpd's Controller needs the port before it binds (it connects to it to check).
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    """``python -m channels.simulator.smtp --port 2525``: serve until interrupted, then print
    how many messages were accepted on how many connections."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--tls-cert", help="PEM certificate: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls", choices=["starttls", "implicit"], default="starttls")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per DATA")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--no-record", action="store_true", help="count mail, keep nothing")
    args = parser.parse_args(argv)
    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    simulator = SmtpSimulator(
        port=args.port,
        username=args.username,
        password=args.password,
        tls_context=tls_context,
        tls=args.tls,
        latency=args.latency,
        error_rate=args.error_rate,
        record=not args.no_record,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with simulator:
        print(f"smtp simulator on {simulator.host}:{simulator.port}", flush=True)
        stopping.wait()
        accepted = simulator.handler.accepted
        print(f"accepted {accepted} messages on {simulator.connections} connections", flush=True)


if __name__ == "__main__":
    main()
