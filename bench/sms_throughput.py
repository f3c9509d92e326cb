"""Benchmark: SMS through the generic HTTP provider (``http_sms``) with ONE ``icc worker``,
against a raw aiohttp client loop posting the same requests to the same simulator.

Setup, once per run: a fresh PostgreSQL database, a unique arq queue on Redis, the SMS gateway
simulator in its own process (``bench._sms_gateway``: the project's ``SmsGatewaySimulator``,
no latency, no errors, with counters), and a providers file with one ``http_sms`` account
pointing at it (no effective rate limit). The accepting side runs in this process: the
platform's API on an accept-only runtime, called through ``httpx.ASGITransport``.

Alternating rounds (after a warm-up of both sides), N messages each, each side in a fresh
process of its own on uvloop:

- project (``bench._sms_project``): N messages of a scenario whose only channel is SMS are
  accepted through ``POST /v1/messages/batch``, then ``icc worker`` is started; the
  worker claims them, sends each through ``HttpSmsProvider`` (channels.http over
  channels.http1, a lean HTTP/1.1 keep-alive pool) past the Redis rate limiter, and records
  the outcome; the round ends when all N are ``sent`` in the database; the worker is
  stopped.
- baseline (``bench._sms_raw``): an ``aiohttp.ClientSession`` with as many connections, and
  coroutines, as the worker opened in its warm-up, posting the same JSON bodies (checked byte
  for byte against the provider's rendering) and reading each JSON answer. It runs as the
  worker runs (own process, uvloop, start-up heap frozen): ``--baseline-loop asyncio`` gives
  the weaker baseline of earlier runs (asyncio's loop), for comparison.
- bound (``bench._sms_raw_db``, ``--no-db-bound`` skips it): the baseline's loop doing by
  hand, with asyncpg, the database writes the worker does for each message (claim and
  ``sending`` event, outcome and ``sent`` event, outbox row deleted), on messages accepted
  as the project's are. Checked to keep the same record of a send as the worker (columns
  and events). It is what any program keeping that record reaches on this machine: the
  project is compared with it too (worker / bound).

Both are timed on the simulator: requests / (first answer -> last answer). The project is also
timed from the database (first ``sending`` event -> last ``sent_at``), which covers the claim
before the first send and the outcome after the last. Ratios: project / baseline, per round
and of the medians, from the simulator and (stricter) from the database. Target: >= 0.7x.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.migrate import upgrade
from app.runtime import Runtime
from app.settings import QueueSettings, Settings
from bench._cpu import CpuClock, MachineClock, Profiler, RedisCpu
from bench._sms_gateway import Gateway, GatewayStats
from bench._sms_project import Project, providers_toml
from bench._support import (
    HOST,
    REDIS_URL,
    BenchError,
    Workspace,
    check_redis,
    child_env,
    free_port,
    header,
    median,
    postgres_database,
    purge_arq_queue,
    ratio_text,
    report_logged_errors,
    row,
    run_main,
    unique_name,
    wait_http_ready,
    workspace,
)

MESSAGES = 5_000
ROUNDS = 3
TARGET = 0.7
PROVIDER_CONNECTIONS = 100  # the http_sms provider's default max_connections
RAW_TIMEOUT = 300.0


@dataclass(frozen=True)
class Round:
    gateway: GatewayStats
    cpu: float  # CPU seconds of the sender (the worker process, or the raw loop)
    machine_busy: float  # share of all CPUs busy during the round, any process
    redis_cpu: float  # CPU seconds of the Redis server (all its clients)
    postgres_cpu: float | None = None  # project: of the worker's backends, when local
    db_rate: float | None = None  # project: N / (first claim -> last sent_at)

    def ms(self, seconds: float | None) -> str:
        if seconds is None:
            return "n/a"
        return f"{seconds / max(1, self.gateway.count) * 1000:.3f}"


class Bench:
    def __init__(self, args: argparse.Namespace, project: Project, gateway: Gateway) -> None:
        self.args, self.project, self.gateway = args, project, gateway
        self.concurrency: int = args.concurrency
        self.text_file = project.ws.path / "sms_text.txt"
        self.sent_ids: dict[str, list[str]] = {}  # accepted per round tag

    async def project_round(self, count: int, tag: str, profile: Path | None = None) -> Round:
        """The messages are accepted (and their jobs queued) before the worker starts: the
        round times the worker alone, as the baseline's is its loop alone (accepting is
        batch_postgres's measure; done during the round, it took CPU from the worker on
        these 2 cores and could leave it waiting for the next batch)."""
        await self.gateway.reset()
        ids = self.sent_ids[tag] = await self.project.accept(count, tag)
        since = await self.project.db.fetchval("SELECT now()")
        worker = self.project.start_worker(tag)
        cpu, machine, redis_cpu = CpuClock(worker.proc.pid), MachineClock(), RedisCpu()
        profiler: AbstractContextManager[object] = (
            Profiler(worker.proc.pid, profile) if profile else nullcontext()
        )
        with profiler:
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

    async def raw_round(self, count: int, tag: str) -> Round:
        """The baseline in its own process (bench._sms_raw); its CPU is the loop's own."""
        result = self.project.ws.path / f"raw-{tag}.json"
        argv = [sys.executable, "-m", "bench._sms_raw", "--url", self.gateway.url]
        argv += ["--text-file", str(self.text_file)]
        argv += ["--messages", str(count), "--concurrency", str(self.concurrency)]
        argv += ["--result", str(result), "--loop", self.args.baseline_loop]
        await self.gateway.reset()
        machine, redis_cpu = MachineClock(), RedisCpu()
        cpu = await self.run_loop(f"raw loop {tag}", argv, result)
        return Round(await self.gateway.stats(), cpu, machine.busy(), redis_cpu.seconds())

    async def run_loop(
        self,
        name: str,
        argv: list[str],
        result: Path,
        watch: Callable[[], Awaitable[None]] | None = None,
    ) -> float:
        """Run a loop process (bench._sms_raw or _sms_raw_db) to its end, awaiting ``watch``
        every 50 ms meanwhile; the CPU seconds it reports."""
        child = self.project.ws.spawn(name.replace(" ", "-"), argv, env=child_env())
        deadline = asyncio.get_running_loop().time() + RAW_TIMEOUT
        while child.proc.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                raise BenchError(f"the {name} did not finish in {RAW_TIMEOUT:.0f} s")
            if watch is not None:
                await watch()
            await asyncio.sleep(0.05)
        if child.proc.returncode != 0:
            raise BenchError(f"the {name} failed; its log ends:\n{child.tail()}")
        return float(orjson.loads(result.read_bytes())["cpu"])

    async def bound_round(self, count: int, tag: str) -> Round:
        """The raw loop with the worker's database writes done by hand (bench._sms_raw_db), on
        freshly accepted messages; its CPU is the loop's own, PostgreSQL's is its backends'."""
        ids = self.sent_ids[f"b{tag}"] = await self.project.accept(count, f"b{tag}")
        ids_file = self.project.ws.path / f"bound-{tag}.ids"
        ids_file.write_text("\n".join(ids), encoding="utf-8")
        result = self.project.ws.path / f"bound-{tag}.json"
        argv = [sys.executable, "-m", "bench._sms_raw_db", "--url", self.gateway.url]
        argv += ["--dsn", self.project.dsn, "--ids-file", str(ids_file)]
        argv += ["--text-file", str(self.text_file), "--concurrency", str(self.concurrency)]
        argv += ["--result", str(result)]
        await self.gateway.reset()
        since = await self.project.db.fetchval("SELECT now()")
        machine, redis_cpu = MachineClock(), RedisCpu()
        backends: list[float] = [0.0]

        async def watch() -> None:
            # its backends end with it: their CPU is read while they are all there
            backends.append(await self.project.backend_cpu(since) or 0.0)

        cpu = await self.run_loop(f"bound loop {tag}", argv, result, watch)
        stats = await self.gateway.stats()
        await self.project.check_sent(ids)
        return Round(stats, cpu, machine.busy(), redis_cpu.seconds(), max(backends) or None)

    async def check_same_record(self) -> None:
        """The bound keeps the same record of a send as the worker: columns and events."""
        project = await self.project.record_of(self.sent_ids["w"][0])
        bound = await self.project.record_of(self.sent_ids["bw"][0])
        if project != bound:
            raise BenchError(f"the bound writes {bound}, the worker {project}")

    async def run(self) -> list[tuple[Round, Round, Round | None]]:
        await self.project.prepare()
        n, rounds = self.args.messages, self.args.rounds
        warm = await self.project_round(n, "w")
        text = await self.project.check_same_body(self.gateway.url)
        self.text_file.write_text(text, encoding="utf-8")
        if not self.concurrency:
            self.concurrency = warm.gateway.connections
        await self.raw_round(n, "w")
        if self.args.db_bound:
            await self.bound_round(n, "w")
            await self.check_same_record()
        print(
            f"   baseline: {self.concurrency} connections (as many as the worker opened), "
            f"{self.args.baseline_loop}\n"
        )
        results = []
        for i in range(rounds):
            profile = self.args.profile if i == rounds - 1 else None
            if i % 2 == 0:
                raw = await self.raw_round(n, f"r{i}")
                project = await self.project_round(n, f"p{i}", profile)
            else:
                project = await self.project_round(n, f"p{i}", profile)
                raw = await self.raw_round(n, f"r{i}")
            bound = await self.bound_round(n, f"b{i}") if self.args.db_bound else None
            report_round(i + 1, project, raw, bound)
            results.append((project, raw, bound))
        return results


def report_round(index: int, project: Round, raw: Round, bound: Round | None) -> None:
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
    if bound is not None:
        b = bound.gateway
        row(f"round {index} bound: raw + writes", f"{b.rate:,.0f} sends/s, {b.connections} conns")
        row(
            "",
            f"CPU ms/msg: loop {bound.ms(bound.cpu)}, its postgres backends "
            f"{bound.ms(bound.postgres_cpu)}, simulator {bound.ms(b.cpu)}; "
            f"machine {bound.machine_busy:.0%} busy",
        )
        row(f"round {index} bound / raw", ratio_text(b.rate, r.rate))
    row(f"round {index} ratio", ratio_text(p.rate, r.rate))


def report(results: list[tuple[Round, Round, Round | None]]) -> None:
    project = median([p.gateway.rate for p, _, _ in results])
    confirmed = median([p.db_rate or 0.0 for p, _, _ in results])
    raw = median([r.gateway.rate for _, r, _ in results])
    ratios = [p.gateway.rate / r.gateway.rate for p, r, _ in results if r.gateway.rate]
    print()
    bounds = [b.gateway.rate for _, _, b in results if b is not None]
    if bounds:
        row("median bound (raw loop + the same writes)", f"{median(bounds):,.0f} sends/s")
        row("bound / raw, of the medians", ratio_text(median(bounds), raw))
        row("icc worker / bound, of the medians", ratio_text(project, median(bounds)))
    row("median icc worker (http_sms)", f"{project:,.0f} sends/s (db: {confirmed:,.0f}/s)")
    row("median raw aiohttp loop", f"{raw:,.0f} sends/s")
    row("median of the round ratios", f"{median(ratios):.3f}x")
    row("ratio of the medians (db)", ratio_text(confirmed, raw))
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
        "--baseline-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the baseline's event loop (default: uvloop, as icc worker runs)",
    )
    parser.add_argument(
        "--db-bound",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run, each round, the raw loop doing the worker's database writes by hand "
        "(bench._sms_raw_db): what those writes leave of the raw loop's rate on this machine "
        "(default: on)",
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
