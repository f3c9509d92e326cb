"""Benchmark: SMS through the generic HTTP provider (``http_sms``) with ONE ``icc worker``,
against a raw aiohttp client loop posting the same requests to the same simulator.

Setup, once per run: a fresh PostgreSQL database, a unique arq queue on Redis, the SMS gateway
simulator in its own process (``bench._sms_gateway``: the project's ``SmsGatewaySimulator``,
no latency, no errors, with counters), and a providers file with one ``http_sms`` account
pointing at it (no effective rate limit). The accepting side runs in this process: the
platform's API on an accept-only runtime, called through ``httpx.ASGITransport``.

Alternating rounds (after a warm-up of both sides), N messages each:

- project: ``icc worker`` is started and ready, then N messages of a scenario whose only
  channel is SMS are accepted through ``POST /v1/messages/batch``; the worker claims them,
  sends each through ``HttpSmsProvider`` (httpx over the aiohttp transport) and records the
  outcome; the round ends when all N are ``sent`` in the database; the worker is stopped.
- baseline: an ``aiohttp.ClientSession`` with as many connections, and coroutines, as the
  worker opened in its warm-up, posting the same JSON bodies (checked byte for byte against
  the provider's rendering) and reading each JSON answer.

Both are timed on the simulator: requests / (last answer - first answer). The project is also
timed from the database (first claim to last ``sent_at``). Ratio: project / baseline, per
round and the median. Target: >= 0.7x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from app.auth.schemas import Role
from app.auth.service import create_key
from app.ids import new_id
from app.main import create_app
from app.migrate import upgrade
from app.runtime import Runtime
from app.settings import QueueSettings, Settings
from bench._cpu import CpuClock, MachineClock, Profiler, RedisCpu, process_cpu
from bench._sms_gateway import Gateway, GatewayStats
from bench._support import (
    HOST,
    REDIS_URL,
    BenchError,
    Child,
    Workspace,
    check_redis,
    child_env,
    free_port,
    header,
    icc_command,
    median,
    postgres_database,
    purge_arq_queue,
    ratio_text,
    report_logged_errors,
    row,
    run_main,
    unique_name,
    wait_arq_worker,
    wait_http_ready,
    workspace,
)

MESSAGES = 5_000
ROUNDS = 3
TARGET = 0.7
BATCH = 5_000  # items per POST /v1/messages/batch
ROUND_TIMEOUT = 300.0
ACCOUNT = "gateway-bench"
# rate_per_second unset would mean the plugin's default_rate (100/s): set one no run reaches
NO_LIMIT = 10_000_000
PROVIDER_CONNECTIONS = 100  # the http_sms provider's default max_connections
SCENARIO: dict[str, Any] = {
    "key": "sms_bench",
    "class": "transactional",
    "channels": ["sms"],
    "required_variables": [
        {"name": "account_tail", "type": "string"},
        {"name": "amount", "type": "decimal"},
        {"name": "balance", "type": "decimal"},
    ],
    "templates": {
        "sms": {
            "body": "【示例银行】您尾号{{ account_tail }}的账户于今日支出人民币{{ amount }}元，"
            "余额{{ balance }}元。如有疑问请致电95500。"
        }
    },
}
VARIABLES = {"account_tail": "1234", "amount": "1200.00", "balance": "35200.50"}


def providers_toml(gateway_url: str) -> str:
    return f"""[[providers]]
name = "{ACCOUNT}"
type = "http_sms"
channel = "sms"
rate_per_second = {NO_LIMIT}
burst = {NO_LIMIT}
[providers.settings]
url = "{gateway_url}"
success_field = "code"
success_value = "0"
message_id_field = "data.msgid"
"""


def phone(index: int) -> str:
    return f"139{index:08d}"


@dataclass(frozen=True)
class Round:
    gateway: GatewayStats
    cpu: float  # CPU seconds of the sender (the worker process, or this process)
    machine_busy: float  # share of all CPUs busy during the round, any process
    redis_cpu: float  # CPU seconds of the Redis server (all its clients)
    postgres_cpu: float | None = None  # project: of the worker's backends, when local
    db_rate: float | None = None  # project: N / (first claim -> last sent_at)

    def ms(self, seconds: float | None) -> str:
        if seconds is None:
            return "n/a"
        return f"{seconds / max(1, self.gateway.count) * 1000:.3f}"


class Project:
    """The accepting API in this process, and one ``icc worker`` process per round."""

    def __init__(self, ws: Workspace, runtime: Runtime, env: dict[str, str], db: Any) -> None:
        self.ws, self.runtime, self.env, self.db = ws, runtime, env, db
        self.app = create_app(runtime.settings, runtime=runtime)
        self.keys: dict[str, str] = {}
        self.workers: list[Child] = []

    def client(self, role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://icc.bench",
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=300,
        )

    async def prepare(self) -> None:
        async with self.runtime.sessionmaker() as session:
            for role in (Role.system, Role.marketer):
                _, self.keys[role.value] = await create_key(
                    session, name=f"bench-{role.value}", role=role, owner=f"bench-{role.value}"
                )
            await session.commit()
        async with self.client("marketer") as client:
            response = await client.post("/v1/scenarios", json=SCENARIO)
        if response.status_code != 201:
            raise BenchError(f"scenario not created: {response.status_code} {response.text}")

    async def accept(self, count: int, tag: str) -> list[str]:
        ids: list[str] = []
        async with self.client("system") as client:
            for start in range(0, count, BATCH):
                items = [
                    {"customer_id": f"{tag}{i:06d}", "recipient": {"phone": phone(i)}}
                    | {"variables": VARIABLES}
                    for i in range(start, min(count, start + BATCH))
                ]
                body = orjson.dumps({"scenario": SCENARIO["key"], "items": items})
                response = await client.post(
                    "/v1/messages/batch",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code != 202:
                    raise BenchError(f"batch answered {response.status_code}: {response.text}")
                ids += [r["id"] for r in response.json()["items"] if r.get("id")]
        if len(ids) != count:
            raise BenchError(f"accepted {len(ids)} of {count}")
        return ids

    def start_worker(self, tag: str) -> Child:
        worker = self.ws.spawn(f"icc-worker-{tag}", [*icc_command(), "worker"], env=self.env)
        self.workers.append(worker)
        wait_arq_worker(worker, self.runtime.settings.queue.name)
        return worker

    async def wait_sent(self, ids: list[str], worker: Child, gateway: Gateway) -> None:
        """Until the simulator has answered every message (polled there: cheap), then
        until the database says all are sent."""
        deadline = time.monotonic() + ROUND_TIMEOUT
        while (await gateway.count()) < len(ids):
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"not all {len(ids)} sent after {ROUND_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)
        sql = (
            "SELECT count(*) FILTER (WHERE status = 'sent'), "
            "count(*) FILTER (WHERE status = 'failed') FROM messages WHERE id = ANY($1::text[])"
        )
        while True:
            sent, failed = await self.db.fetchrow(sql, ids)
            if failed:
                raise BenchError(f"{failed} messages failed; worker log:\n{worker.tail()}")
            if sent == len(ids):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"only {sent} of {len(ids)} sent after {ROUND_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

    async def backend_cpu(self, since: Any) -> float | None:
        """CPU seconds of the PostgreSQL backends connected since ``since`` (the worker's),
        when PostgreSQL runs on this machine."""
        pids = await self.db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_start >= $1",
            since,
        )
        if not pids or not Path(f"/proc/{pids[0]['pid']}").exists():
            return None
        return sum(process_cpu(r["pid"]) for r in pids)

    async def db_rate(self, ids: list[str]) -> float:
        span = await self.db.fetchval(
            "SELECT extract(epoch FROM max(m.sent_at) - min(e.at)) FROM messages m "
            "JOIN message_events e ON e.message_id = m.id AND e.type = 'sending' "
            "WHERE m.id = ANY($1::text[])",
            ids,
        )
        return len(ids) / float(span) if span else 0.0

    async def sample(self) -> tuple[str, str, str]:
        """(phone, text, message id) of one sent message, as the provider rendered them."""
        rec = await self.db.fetchrow(
            "SELECT id, recipient, content FROM messages WHERE status = 'sent' LIMIT 1"
        )
        if rec is None:
            raise BenchError("no sent message to copy the request body from")
        recipient, content = (json.loads(v) if isinstance(v, str) else v for v in rec[1:])
        return str(recipient["phone"]), str(content["sms"]["body"]), str(rec["id"])


def raw_body(to: str, text: str, message_id: str) -> bytes:
    """The provider's default body template, written by hand: Jinja's ``tojson`` is
    ``json.dumps`` (ASCII escapes) for these strings, and the template's separators are
    json's defaults."""
    return json.dumps({"to": to, "text": text, "message_id": message_id, "sign": ""}).encode()


async def check_same_body(project: Project, gateway_url: str) -> str:
    """Render one body with the project's provider and compare: returns the SMS text."""
    to, text, message_id = await project.sample()
    slot = project.runtime.providers.slot(ACCOUNT)
    assert slot is not None
    provider: Any = slot.provider
    request = provider.build_request(to=to, content={"body": text}, message_id=message_id)
    if request.content != raw_body(to, text, message_id) or str(request.url) != gateway_url:
        raise BenchError(f"baseline body differs from the provider's: {request.content!r}")
    return text


async def raw_loop(url: str, bodies: list[bytes], concurrency: int) -> None:
    """The baseline: ``concurrency`` coroutines over one aiohttp session with as many
    connections, each posting the next body and reading its JSON answer."""
    pending: Iterator[bytes] = iter(bodies)
    headers = {"Content-Type": "application/json"}
    failures: list[int] = []

    async def sender(session: aiohttp.ClientSession) -> None:
        for body in pending:
            async with session.post(url, data=body, headers=headers) as response:
                answer = orjson.loads(await response.read())
                if response.status != 200 or answer.get("code") != "0":
                    failures.append(response.status)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    if failures:
        raise BenchError(f"baseline: {len(failures)} requests failed, e.g. HTTP {failures[0]}")


class Bench:
    def __init__(self, args: argparse.Namespace, project: Project, gateway: Gateway) -> None:
        self.args, self.project, self.gateway = args, project, gateway
        self.concurrency: int = args.concurrency
        self.text = ""

    async def project_round(self, count: int, tag: str, profile: Path | None = None) -> Round:
        worker = self.project.start_worker(tag)
        since = await self.project.db.fetchval("SELECT now()")
        await self.gateway.reset()
        cpu, machine, redis_cpu = CpuClock(worker.proc.pid), MachineClock(), RedisCpu()
        profiler: AbstractContextManager[object] = (
            Profiler(worker.proc.pid, profile) if profile else nullcontext()
        )
        with profiler:
            ids = await self.project.accept(count, tag)
            await self.project.wait_sent(ids, worker, self.gateway)
        result = Round(
            gateway=await self.gateway.stats(),
            cpu=cpu.seconds(),
            machine_busy=machine.busy(),
            redis_cpu=redis_cpu.seconds(),
            postgres_cpu=await self.project.backend_cpu(since),
            db_rate=await self.project.db_rate(ids),
        )
        worker.stop()
        if result.gateway.count != count:
            raise BenchError(f"the simulator got {result.gateway.count} requests for {count}")
        return result

    async def raw_round(self, count: int) -> Round:
        bodies = [raw_body(phone(i), self.text, new_id("msg")) for i in range(count)]
        await self.gateway.reset()
        cpu, machine, redis_cpu = CpuClock(os.getpid()), MachineClock(), RedisCpu()
        await raw_loop(self.gateway.url, bodies, self.concurrency)
        return Round(await self.gateway.stats(), cpu.seconds(), machine.busy(), redis_cpu.seconds())

    async def run(self) -> list[tuple[Round, Round]]:
        await self.project.prepare()
        n, rounds = self.args.messages, self.args.rounds
        warm = await self.project_round(n, "w")
        self.text = await check_same_body(self.project, self.gateway.url)
        if not self.concurrency:
            self.concurrency = warm.gateway.connections
        await self.raw_round(n)
        print(f"   baseline concurrency: {self.concurrency} (connections the worker opened)\n")
        results = []
        for i in range(rounds):
            profile = self.args.profile if i == rounds - 1 else None
            if i % 2 == 0:
                raw = await self.raw_round(n)
                project = await self.project_round(n, f"p{i}", profile)
            else:
                project = await self.project_round(n, f"p{i}", profile)
                raw = await self.raw_round(n)
            report_round(i + 1, project, raw)
            results.append((project, raw))
        return results


def report_round(index: int, project: Round, raw: Round) -> None:
    p, r = project.gateway, raw.gateway
    row(
        f"round {index} icc worker",
        f"{p.rate:,.0f} sends/s (db: {project.db_rate or 0:,.0f}/s), {p.connections} conns",
    )
    row(
        "",
        f"CPU ms/msg: worker {project.ms(project.cpu)}, its postgres backends "
        f"{project.ms(project.postgres_cpu)}, redis {project.ms(project.redis_cpu)}, "
        f"simulator {project.ms(p.cpu)}; machine {project.machine_busy:.0%} busy",
    )
    row(f"round {index} raw aiohttp loop", f"{r.rate:,.0f} sends/s, {r.connections} conns")
    row(
        "",
        f"CPU ms/msg: client {raw.ms(raw.cpu)}, redis {raw.ms(raw.redis_cpu)}, "
        f"simulator {raw.ms(r.cpu)}; machine {raw.machine_busy:.0%} busy",
    )
    row(f"round {index} ratio", ratio_text(p.rate, r.rate))


def report(results: list[tuple[Round, Round]]) -> None:
    project = median([p.gateway.rate for p, _ in results])
    raw = median([r.gateway.rate for _, r in results])
    ratios = [p.gateway.rate / r.gateway.rate for p, r in results if r.gateway.rate]
    print()
    row("median icc worker (http_sms)", f"{project:,.0f} sends/s")
    row("median raw aiohttp loop", f"{raw:,.0f} sends/s")
    row("median of the round ratios", f"{median(ratios):.3f}x")
    row("ratio of the medians", ratio_text(project, raw, target=TARGET))


async def measure(args: argparse.Namespace, ws: Workspace, env: dict[str, str]) -> None:
    import asyncpg

    settings = Settings(
        database_url=env["ICC_DATABASE_URL"],
        redis_url=REDIS_URL,
        providers_file=env["ICC_PROVIDERS_FILE"],
        queue=QueueSettings(**{**args.queue, "name": env["ICC_QUEUE__NAME"]}),
    )
    runtime = Runtime(settings, run_workers=False)
    await runtime.start()
    db = await asyncpg.connect(env["ICC_DATABASE_URL"])
    try:
        project = Project(ws, runtime, env, db)
        gateway = Gateway(env["BENCH_GATEWAY"])
        ws.stack.callback(report_logged_errors, project.workers)
        try:
            results = await Bench(args, project, gateway).run()
        finally:
            await gateway.http.aclose()
    finally:
        await db.close()
        await runtime.close()
    report(results)


def start_gateway(ws: Workspace) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "bench._sms_gateway", "--port", str(port)]
    gateway = ws.spawn("sms-gateway", argv, env=child_env())
    wait_http_ready(gateway, port, path="/stats")
    return f"http://{HOST}:{port}"


def body(args: argparse.Namespace) -> None:
    check_redis()
    queue = unique_name("icc:bench:sms")
    with postgres_database("icc_bench_sms") as db_url, workspace("sms") as ws:
        ws.stack.callback(purge_arq_queue, queue)
        base = start_gateway(ws)
        providers = ws.path / "providers.toml"
        providers.write_text(providers_toml(f"{base}/gateway/sms"), encoding="utf-8")
        env = child_env(
            ICC_DATABASE_URL=db_url,
            ICC_REDIS_URL=REDIS_URL,
            ICC_PROVIDERS_FILE=str(providers),
            **{f"ICC_QUEUE__{k.upper()}": str(v) for k, v in args.queue.items()},
            ICC_QUEUE__NAME=queue,
        )
        upgrade(db_url)
        q = QueueSettings(**args.queue)
        header(
            "sms_throughput: one icc worker through http_sms vs a raw aiohttp loop",
            f"{args.messages:,} messages per round, {args.rounds} alternating rounds after a "
            f"warm-up of each side; worker: {q.workers} jobs x {q.concurrency} sends, chunks "
            f"of {q.chunk_size}, {PROVIDER_CONNECTIONS} connections; timed on the simulator",
        )
        asyncio.run(measure(args, ws, {**env, "BENCH_GATEWAY": base}))


def queue_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in QueueSettings.model_fields or name == "name":
        raise argparse.ArgumentTypeError("expected NAME=VALUE with a field of QueueSettings")
    return name, value


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sms_throughput", description=__doc__)
    parser.add_argument("--messages", type=int, default=MESSAGES, help="per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="baseline coroutines and connections (default: as many as the worker opened)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the worker in the last round; write collapsed stacks to this file",
    )
    parser.add_argument(
        "--queue",
        type=queue_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a queue setting for the worker (and the accepting side), e.g. concurrency=128",
    )
    args = parser.parse_args()
    args.queue = dict(args.queue)
    try:
        QueueSettings(**args.queue)
    except ValueError as exc:  # pydantic's ValidationError
        parser.error(str(exc))
    return run_main(lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
