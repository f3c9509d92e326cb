"""Benchmark: email through the SMTP provider's connection pool against one connection per
message, same SMTP server, same run.

- pool: ``SmtpEmailProvider.send()`` (channels/email.py): MIME built per message, sent over
  its pool of reused aiosmtplib connections (channels/smtp_pool.py);
- baseline: the same MIME (``channels.email_mime.build_message``, same content) sent over a new
  aiosmtplib connection per message (connect, EHLO, [STARTTLS, EHLO, AUTH], MAIL, RCPT, DATA,
  QUIT), with the same TLS context and client host name.

Both send N personalised messages with C sends in flight (asyncio.gather under a semaphore),
in alternating rounds after a warm-up. The server is the aiosmtpd simulator
(channels/simulator/smtp.py) in a child process on 127.0.0.1, so that client and server each
have a core. Two server setups: plain SMTP, and STARTTLS + AUTH with a throwaway RSA-2048
certificate (how a bank's relay on port 587 is set up; skipped without the openssl command).
Figures: messages/s, CPU ms per message on each side, pool/baseline (target >= 3x).

Plain SMTP on loopback is the pool's worst case: no handshake and no network delay to save,
so what a new connection adds is a TCP connect, greeting, EHLO and QUIT, and neither
aiosmtplib nor aiosmtpd does PIPELINING. The work both sides share (the MIME, MAIL, RCPT and
DATA) decides the ratio there (bench/README.md). With STARTTLS and AUTH, as a bank's relay is
set up, every new connection also pays a TLS handshake and a login.

The pool holds as many connections as there are sends in flight (``--pool-size`` defaults
to ``--concurrency``): the baseline has that many open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiosmtplib

from bench._support import (
    HOST,
    ROOT,
    BenchError,
    free_port,
    header,
    median,
    ratio_text,
    row,
    run_main,
    workspace,
)
from channels.base import ProviderContext
from channels.email import SmtpEmailProvider
from channels.email_mime import build_message
from channels.errors import ChannelError

TARGET = 3.0
WARMUP = 200
MAX_SECONDS = 300.0  # the whole benchmark; rounds stop early past it
ROUND_TIMEOUT = 120.0  # one batch of sends
FROM = "noreply@bank.example"
HELO = "icc-bench.local"
USERNAME, PASSWORD = "icc", "bench-secret"


@dataclass(frozen=True)
class Options:
    messages: int
    rounds: int
    concurrency: int
    pool_size: int
    tls: bool


@dataclass(frozen=True)
class Server:
    """A simulator child process and how to reach it."""

    proc: subprocess.Popen[str]
    port: int
    tls: ssl.SSLContext | None  # the client's context when the server wants STARTTLS + AUTH
    ca_file: str | None

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    rate: float  # messages/s
    client_ms: float  # CPU ms per message, this process
    server_ms: float  # CPU ms per message, the simulator


def content(i: int) -> dict[str, Any]:
    """A transactional mail personalised like the real ones (amount and balance vary)."""
    amount, balance = f"{1000 + i % 9000}.00", f"{35000 + i}.50"
    return {
        "subject": f"账户变动提醒：您尾号1234的账户支出人民币{amount}元",
        "body": f"尊敬的客户：\n您尾号1234的账户于今日支出人民币{amount}元，余额{balance}元。\n"
        "如非本人操作，请致电95555。",
        "html": f"<p>尊敬的客户：</p><p>您尾号<b>1234</b>的账户于今日支出人民币<b>{amount}</b>"
        f"元，余额{balance}元。</p><p>如非本人操作，请致电95555。</p>",
    }


@contextmanager
def simulator(folder: Path, *, tls: bool) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "channels.simulator.smtp", "--port", str(port), "--no-record"]
    client_tls, ca_file = None, None
    if tls:
        cert, key = make_certificate(folder)
        argv += ["--tls-cert", str(cert), "--tls-key", str(key), "--tls", "starttls"]
        argv += ["--username", USERNAME, "--password", PASSWORD]
        client_tls, ca_file = ssl.create_default_context(cafile=str(cert)), str(cert)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("smtp simulator on"):
            raise BenchError(f"the SMTP simulator did not start (exit {proc.poll()})")
        yield Server(proc, port, client_tls, ca_file)
    finally:
        proc.terminate()
        tally = proc.communicate(timeout=15)[0].strip()
        row("server tally", tally or f"(none, exit {proc.returncode})")


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOST}"),
            *("-addext", f"subjectAltName=IP:{HOST}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def make_provider(server: Server, pool_size: int) -> SmtpEmailProvider:
    settings: dict[str, Any] = {
        "host": HOST,
        "port": server.port,
        "security": "none",
        "from_address": FROM,
        "from_name": "示例银行",
        "helo_hostname": HELO,
        "pool_size": pool_size,
        "timeout": 10,
    }
    if server.tls is not None:
        settings |= {"security": "starttls", "ca_file": server.ca_file}
        settings |= {"username": USERNAME, "password": PASSWORD}
    return SmtpEmailProvider(
        account="bench", channel="email", settings=settings, context=ProviderContext()
    )


async def send_pooled(provider: SmtpEmailProvider, i: int) -> None:
    await provider.send(
        to=f"c{i}@example.com",
        content=content(i),
        idempotency_key=f"b{i}:email",
        message_id=f"b{i}",
    )


async def send_fresh(server: Server, provider: SmtpEmailProvider, i: int) -> None:
    to = f"c{i}@example.com"
    _, data = build_message(
        provider.config,
        to=to,
        content=content(i),
        idempotency_key=f"b{i}:email",
        message_id=f"b{i}",
    )
    tls = server.tls is not None
    smtp = aiosmtplib.SMTP(
        hostname=HOST,
        port=server.port,
        local_hostname=HELO,
        timeout=10,
        start_tls=tls,
        tls_context=server.tls,
        username=USERNAME if tls else None,
        password=PASSWORD if tls else None,
    )
    await smtp.connect()
    try:
        await smtp.sendmail(FROM, [to], data)
    finally:
        await smtp.quit()


async def timed(
    send: Callable[[int], Awaitable[None]], server: Server, count: int, concurrency: int
) -> Sample:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            await send(i)

    cpu, server_cpu, started = time.process_time(), server.cpu_seconds(), time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), ROUND_TIMEOUT)
    except TimeoutError:
        raise BenchError(f"{count} sends took more than {ROUND_TIMEOUT:.0f} s") from None
    except (ChannelError, aiosmtplib.SMTPException, OSError) as exc:
        raise BenchError(f"a send failed: {exc!r}") from exc
    elapsed = time.perf_counter() - started
    return Sample(
        rate=count / elapsed,
        client_ms=(time.process_time() - cpu) * 1000 / count,
        server_ms=(server.cpu_seconds() - server_cpu) * 1000 / count,
    )


def describe(sample: Sample) -> str:
    cpu = f"CPU/msg: client {sample.client_ms:.2f} ms, server {sample.server_ms:.2f} ms"
    return f"{sample.rate:8.0f} msg/s   ({cpu})"


async def compare(server: Server, options: Options, deadline: float) -> None:
    provider = make_provider(server, options.pool_size)
    pooled = partial(send_pooled, provider)
    fresh = partial(send_fresh, server, provider)
    try:
        await timed(pooled, server, WARMUP, options.concurrency)
        await timed(fresh, server, WARMUP, options.concurrency)
        pools: list[Sample] = []
        bases: list[Sample] = []
        for n in range(1, options.rounds + 1):
            if time.monotonic() > deadline:
                row("(time budget spent)", f"stopped after {n - 1} rounds")
                break
            pools.append(await timed(pooled, server, options.messages, options.concurrency))
            bases.append(await timed(fresh, server, options.messages, options.concurrency))
            row(f"round {n}: pool", describe(pools[-1]))
            row(f"round {n}: one connection per message", describe(bases[-1]))
        opened = provider.pool.opened
    finally:
        await provider.close()
    report(pools, bases, opened)


def report(pools: list[Sample], bases: list[Sample], opened: int) -> None:
    if not pools:
        raise BenchError("no round ran")
    ratios = [p.rate / b.rate for p, b in zip(pools, bases, strict=True)]
    row("pool, median", f"{median([s.rate for s in pools]):8.0f} msg/s on {opened} connection(s)")
    row("one connection per message, median", f"{median([s.rate for s in bases]):8.0f} msg/s")
    row("ratio by round", ", ".join(f"{r:.2f}x" for r in ratios))
    # Each round's two runs are back to back, so their ratio shares the machine's conditions.
    row("ratio pool / baseline (median)", ratio_text(median(ratios), 1.0, target=TARGET))
    # CPU per message moves much less than wall time when other work shares the machine.
    pool_cpu = median([s.client_ms + s.server_ms for s in pools])
    base_cpu = median([s.client_ms + s.server_ms for s in bases])
    row(
        "CPU per message, baseline / pool",
        f"{base_cpu:.2f} / {pool_cpu:.2f} ms = {ratio_text(base_cpu, pool_cpu)}",
    )


def body(options: Options) -> None:
    deadline = time.monotonic() + MAX_SECONDS
    header(
        "email_pool: SmtpEmailProvider (pooled aiosmtplib) vs one connection per message",
        f"{options.messages} messages per round, {options.concurrency} sends in flight, pool of "
        f"{options.pool_size}, {options.rounds} alternating rounds after {WARMUP} warm-up; "
        f"aiosmtpd simulator in a child process on {HOST}",
    )
    setups = [False]
    if options.tls and shutil.which("openssl"):
        setups.append(True)
    elif options.tls:
        print("   (no openssl command: the STARTTLS + AUTH setup is skipped)\n")
    with workspace("email") as ws:
        for tls in setups:
            title = "STARTTLS + AUTH (a relay on port 587)" if tls else "plain SMTP (no TLS)"
            print(f" -- {title}", flush=True)
            with simulator(ws.path, tls=tls) as server:
                asyncio.run(compare(server, options, deadline))
            print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.email_pool", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--pool-size",
        type=int,
        help="connections in the pool (default: --concurrency, the connections the baseline "
        "has open at once)",
    )
    parser.add_argument("--no-tls", dest="tls", action="store_false")
    args = parser.parse_args(argv)
    if not (0 < args.messages <= 20_000 and 0 < args.rounds <= 10 and args.concurrency > 0):
        parser.error("keep --messages within 1..20000 and --rounds within 1..10")
    pool_size = args.pool_size or args.concurrency
    options = Options(args.messages, args.rounds, args.concurrency, pool_size, args.tls)
    return run_main(partial(body, options))


if __name__ == "__main__":
    sys.exit(main())
