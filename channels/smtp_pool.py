"""A pool of reused aiosmtplib connections, used by the smtp provider (channels/email.py).

The pool only lends connections out and takes them back; opening one (host, TLS, AUTH) is the
caller's ``connect`` callable, and what a send does on a connection is the provider's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosmtplib

from channels.errors import TransientChannelError

# A connection idle this long is probed with NOOP before reuse: NAT boxes and firewalls
# forget idle flows without telling either end.
_IDLE_CHECK_SECONDS = 30.0
_NOOP_TIMEOUT = 5.0
_QUIT_TIMEOUT = 2.0


@dataclass(eq=False)
class PooledConnection:
    """An SMTP connection lent out by the pool; ``reused`` when it served a send before."""

    smtp: aiosmtplib.SMTP
    idle_since: float = 0.0
    reused: bool = False


class SmtpPool:
    """At most ``size`` SMTP connections, each used by one send at a time and kept open for
    the next; one that failed or that the server closed is dropped and replaced on demand."""

    def __init__(self, connect: Callable[[], Awaitable[aiosmtplib.SMTP]], size: int) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[PooledConnection] = []
        self._closed = False
        self.opened = 0  # connections opened so far, for tests and benchmarks

    async def acquire(self) -> PooledConnection:
        await self._slots.acquire()
        try:
            if self._closed:
                raise TransientChannelError("the smtp provider is closing", code="closing")
            return await self._take_or_open()
        except BaseException:
            self._slots.release()
            raise

    async def _take_or_open(self) -> PooledConnection:
        while self._idle:
            conn = self._idle.pop()  # most recently used first; the rest may time out unused
            if await _still_usable(conn):
                conn.reused = True
                return conn
            close_now(conn.smtp)
        smtp = await self._connect()
        self.opened += 1
        return PooledConnection(smtp)

    def release(self, conn: PooledConnection, *, reusable: bool) -> None:
        if reusable and not self._closed and conn.smtp.is_connected:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            close_now(conn.smtp)
        self._slots.release()

    def drop_idle(self) -> None:
        """After one stale connection the others are likely stale too (server restart)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            close_now(conn.smtp)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(conn.smtp) for conn in idle))


async def _still_usable(conn: PooledConnection) -> bool:
    if not conn.smtp.is_connected:
        return False
    if time.monotonic() - conn.idle_since < _IDLE_CHECK_SECONDS:
        return True
    try:
        await conn.smtp.noop(timeout=_NOOP_TIMEOUT)
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


def close_now(smtp: aiosmtplib.SMTP) -> None:
    """Close without a QUIT, ignoring errors: the connection is being given up."""
    with contextlib.suppress(Exception):
        smtp.close()


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        await smtp.quit(timeout=_QUIT_TIMEOUT)
    close_now(smtp)
