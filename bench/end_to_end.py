"""Benchmark 3: end to end on the scale-out configuration with ONE arq worker process.

Compares, in the same run, on one fresh PostgreSQL database and one Redis:

- project: ``icc serve`` (accepts only, since ICC_REDIS_URL is set) and one ``icc worker``
  (claims, sends through the sandbox provider, records): accepted -> delivered;
- baseline: the same arq machinery with a raw job: rows inserted with asyncpg and their ids
  enqueued with the project's ArqQueue, consumed by one bench._raw_worker process whose job is
  a single ``UPDATE raw_messages SET delivered_at = clock_timestamp() WHERE id = ANY($1)``.

(a) throughput: a fixed number of messages accepted in batches of 1,000 (project:
``POST /v1/messages/batch``; baseline: executemany + enqueue in chunks of 200, the project's
chunk size); messages/s = count / (last delivered_at - first created_at), from the database.
(b) latency: single messages offered open-loop at a fixed 300/s for 20 s (project:
``POST /v1/messages`` over 16 keep-alive connections; baseline: one INSERT each, ids enqueued
as one job per 25 ms window); p50/p99 of delivered_at - created_at, from the database.
Ratios are project/baseline. Why the baseline enqueues per window: one arq worker starts at
most max_jobs (4) jobs per poll (50 ms), about 80 jobs/s, so one job per message cannot carry
300 messages/s, whoever sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from app.queue.arq_backend import ArqQueue
from app.settings import QueueSettings
from bench._http import Connection, open_loop, post_request
from bench._support import (
    HOST,
    REDIS_URL,
    VARIABLES,
    BenchError,
    Workspace,
    check_redis,
    child_env,
    demo_key,
    free_port,
    header,
    icc_command,
    ms,
    percentile,
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

THROUGHPUT_MESSAGES = 4_000
BATCH = 1_000
RATE = 300.0  # offered messages/s in (b)
DURATION = 20.0  # seconds of offered load in (b)
CONNECTIONS = 16
MAX_IN_FLIGHT = 64
ENQUEUE_WINDOW = 0.025  # baseline (b): seconds of ids per job
DELIVERY_TIMEOUT = 180.0
CHUNK = QueueSettings().chunk_size
CUSTOMERS = ("C0001", "C0002", "C0003")  # seeded by icc demo

RAW_TABLE = """CREATE TABLE raw_messages (
    id text PRIMARY KEY,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at timestamptz
)"""


@dataclass(frozen=True)
class Throughput:
    count: int
    span: float  # first created_at to last delivered_at, seconds

    @property
    def rate(self) -> float:
        return self.count / self.span if self.span > 0 else 0.0


@dataclass
class Latency:
    offered: float = 0.0  # the rate actually achieved by the open-loop generator
    sent: int = 0
    delivered_rate: float = 0.0  # messages / (last delivered_at - first created_at)
    latencies: list[float] = field(default_factory=list)  # created_at -> delivered_at
    client: list[float] = field(default_factory=list)  # request round trips (project only)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


class Pipeline:
    """One side of the comparison: how to accept messages, and the table that tells when
    they were created and delivered."""

    table = ""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.client_latencies: list[float] = []

    async def accept_many(self, count: int, tag: str) -> list[str]:
        raise NotImplementedError

    async def accept_one(self, index: int, tag: str) -> str | None:
        raise NotImplementedError

    async def wait_delivered(self, ids: list[str]) -> None:
        sql = f"SELECT count(delivered_at) FROM {self.table} WHERE id = ANY($1::text[])"
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while await self.db.fetchval(sql, ids) < len(ids):
            if time.monotonic() > deadline:
                raise BenchError(f"{self.table}: not all delivered within {DELIVERY_TIMEOUT} s")
            await asyncio.sleep(0.1)

    async def open_loop(self, fire: Callable[[int], Awaitable[None]], count: int) -> float:
        return await open_loop(fire, rate=RATE, count=count, max_in_flight=MAX_IN_FLIGHT)

    async def throughput(self, ids: list[str]) -> Throughput:
        span = await self.db.fetchval(
            "SELECT extract(epoch FROM max(delivered_at) - min(created_at)) "
            f"FROM {self.table} WHERE id = ANY($1::text[])",
            ids,
        )
        return Throughput(len(ids), float(span))

    async def latencies(self, ids: list[str]) -> list[float]:
        rows = await self.db.fetch(
            "SELECT extract(epoch FROM delivered_at - created_at) AS s "
            f"FROM {self.table} WHERE id = ANY($1::text[])",
            ids,
        )
        return [float(r["s"]) for r in rows]


class Project(Pipeline):
    """icc serve + icc worker, through the HTTP API."""

    table = "messages"

    def __init__(self, db: Any, port: int, key: str) -> None:
        super().__init__(db)
        self.port, self.key = port, key
        self.connections: asyncio.Queue[Connection] = asyncio.Queue()
        auth = {"Authorization": f"Bearer {key}"}
        self.requests = [
            post_request("/v1/messages", orjson.dumps(_single(c)), auth) for c in CUSTOMERS
        ]

    async def open(self) -> None:
        for _ in range(CONNECTIONS):
            self.connections.put_nowait(await Connection.open(self.port))

    async def close(self) -> None:
        while not self.connections.empty():
            await self.connections.get_nowait().close()

    async def accept_many(self, count: int, tag: str) -> list[str]:
        ids: list[str] = []
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{self.port}", timeout=120) as c:
            for start in range(0, count, BATCH):
                items = [_item(f"{tag}{i:06d}") for i in range(start, min(count, start + BATCH))]
                body = orjson.dumps({"scenario": "account_movement", "items": items})
                response = await c.post("/v1/messages/batch", content=body, headers=headers)
                if response.status_code != 202:
                    raise BenchError(f"batch answered {response.status_code}: {response.text}")
                ids += [r["id"] for r in response.json()["items"] if r.get("id")]
        return ids

    async def accept_one(self, index: int, tag: str) -> str | None:
        conn = await self.connections.get()
        try:
            started = time.perf_counter()
            status, body = await conn.send(self.requests[index % len(self.requests)])
            self.client_latencies.append(time.perf_counter() - started)
        finally:
            self.connections.put_nowait(conn)
        return str(orjson.loads(body)["id"]) if status == 202 else None


class EnqueueWindow:
    """Enqueues the ids collected during each ``ENQUEUE_WINDOW`` as one job."""

    def __init__(self, queue: ArqQueue) -> None:
        self.queue = queue
        self.ids: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()

    async def _run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), ENQUEUE_WINDOW)
            await self.flush()

    async def flush(self) -> None:
        if self.ids:
            ids, self.ids = self.ids, []
            await self.queue.enqueue(ids)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # not a cancel: one landing inside flush() lost the window it had taken (seen: 7
        # messages never enqueued, the round then failing on its delivery timeout)
        self.stopping.set()
        if self.task is not None:
            await self.task
        await self.flush()


class Raw(Pipeline):
    """asyncpg inserts + the project's ArqQueue, consumed by bench._raw_worker."""

    table = "raw_messages"

    def __init__(self, db: Any, pool: Any, queue: ArqQueue) -> None:
        super().__init__(db)
        self.pool, self.queue = pool, queue
        self.window = EnqueueWindow(queue)

    async def accept_many(self, count: int, tag: str) -> list[str]:
        ids = [f"{tag}{i:06d}" for i in range(count)]
        for start in range(0, count, BATCH):
            chunk = ids[start : start + BATCH]
            await self.db.executemany(
                "INSERT INTO raw_messages (id, status) VALUES ($1, 'queued')",
                [(i,) for i in chunk],
            )
            await self.queue.enqueue(chunk)
        return ids

    async def accept_one(self, index: int, tag: str) -> str | None:
        message_id = f"{tag}{index:06d}"
        await self.pool.execute(
            "INSERT INTO raw_messages (id, status) VALUES ($1, 'queued')", message_id
        )
        self.window.ids.append(message_id)
        return message_id

    async def open_loop(self, fire: Callable[[int], Awaitable[None]], count: int) -> float:
        self.window.start()
        try:
            return await super().open_loop(fire, count)
        finally:
            await self.window.stop()


def _item(customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "recipient": {"phone": "13900000000"},
        "variables": VARIABLES,
    }


def _single(customer_id: str) -> dict[str, Any]:
    return {"scenario": "account_movement", "customer_id": customer_id, "variables": VARIABLES}


async def measure_throughput(pipeline: Pipeline, tag: str) -> Throughput:
    ids = await pipeline.accept_many(THROUGHPUT_MESSAGES, tag)
    if len(ids) != THROUGHPUT_MESSAGES:
        raise BenchError(f"{pipeline.table}: accepted {len(ids)} of {THROUGHPUT_MESSAGES}")
    await pipeline.wait_delivered(ids)
    return await pipeline.throughput(ids)


async def measure_latency(pipeline: Pipeline, tag: str) -> Latency:
    ids: list[str] = []
    result = Latency()
    pipeline.client_latencies = []

    async def fire(index: int) -> None:
        message_id = await pipeline.accept_one(index, tag)
        if message_id is not None:
            ids.append(message_id)

    count = int(RATE * DURATION)
    result.offered = await pipeline.open_loop(fire, count)
    result.sent = len(ids)
    if len(ids) < count:
        raise BenchError(f"{pipeline.table}: only {len(ids)} of {count} messages were accepted")
    await pipeline.wait_delivered(ids)
    result.latencies = await pipeline.latencies(ids)
    result.delivered_rate = (await pipeline.throughput(ids)).rate
    result.client = pipeline.client_latencies
    return result


@dataclass(frozen=True)
class Results:
    project_throughput: Throughput
    raw_throughput: Throughput
    project_latency: Latency
    raw_latency: Latency


async def measure(db_url: str, port: int, key: str, raw_queue: str) -> Results:
    import asyncpg

    db = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=10)
    queue = ArqQueue(REDIS_URL, queue_name=raw_queue, chunk_size=CHUNK)
    await queue.start()
    project = Project(db, port, key)
    await project.open()
    try:
        await db.execute(RAW_TABLE)
        raw = Raw(db, pool, queue)
        await measure_throughput(raw, "w")  # warm-up of both sides, not reported
        await measure_throughput(project, "w")
        return Results(
            raw_throughput=await measure_throughput(raw, "t"),
            project_throughput=await measure_throughput(project, "t"),
            raw_latency=await measure_latency(raw, "l"),
            project_latency=await measure_latency(project, "l"),
        )
    finally:
        await project.close()
        await queue.close()
        await pool.close()
        await db.close()


def report(r: Results) -> None:
    row("(a) raw pipeline throughput", f"{r.raw_throughput.rate:,.0f} messages/s")
    row(
        "(a) icc throughput accepted->delivered",
        f"{r.project_throughput.rate:,.0f} messages/s "
        f"({r.project_throughput.count} in {r.project_throughput.span:.2f} s)",
    )
    row("(a) ratio icc / raw", ratio_text(r.project_throughput.rate, r.raw_throughput.rate))
    print()
    for name, lat in (("raw pipeline", r.raw_latency), ("icc", r.project_latency)):
        text = (
            f"offered {lat.offered:.0f}/s, {lat.sent} messages: p50 {ms(lat.p(50))}, "
            f"p99 {ms(lat.p(99))}, max {ms(lat.p(100))}; delivered {lat.delivered_rate:.0f}/s"
        )
        if lat.delivered_rate < 0.9 * RATE:
            text += " (SATURATED: latency grows with the run's length)"
        row(f"(b) {name} accepted->delivered", text)
    client = r.project_latency.client
    row(
        "(b) icc POST /v1/messages round trip",
        f"p50 {ms(percentile(client, 50))}, p99 {ms(percentile(client, 99))}",
    )
    p50 = ratio_text(r.project_latency.p(50), r.raw_latency.p(50))
    p99 = ratio_text(r.project_latency.p(99), r.raw_latency.p(99))
    row("(b) latency ratio icc / raw (lower=better)", f"p50 {p50}, p99 {p99}")


def start_processes(ws: Workspace, db_url: str, queue: str, raw_queue: str) -> tuple[int, str]:
    env = child_env(ICC_DATABASE_URL=db_url, ICC_REDIS_URL=REDIS_URL, ICC_QUEUE__NAME=queue)
    key = demo_key(ws, env)
    port = free_port()
    api = ws.spawn("icc-serve", [*icc_command(), "serve", "--port", str(port)], env=env)
    worker = ws.spawn("icc-worker", [*icc_command(), "worker"], env=env)
    raw_argv = [sys.executable, "-m", "bench._raw_worker", "--database-url", db_url]
    raw_argv += ["--redis-url", REDIS_URL, "--queue", raw_queue]
    raw = ws.spawn("raw-worker", raw_argv, env=child_env())
    wait_http_ready(api, port, path="/readyz")
    wait_arq_worker(worker, queue)
    wait_arq_worker(raw, raw_queue)
    ws.stack.callback(report_logged_errors, [api, worker])
    return port, key


def body() -> None:
    check_redis()
    queue, raw_queue = unique_name("icc:bench:e2e"), unique_name("icc:bench:raw")
    with postgres_database("icc_bench_e2e") as db_url, workspace("e2e") as ws:
        ws.stack.callback(purge_arq_queue, queue)
        ws.stack.callback(purge_arq_queue, raw_queue)
        port, key = start_processes(ws, db_url, queue, raw_queue)
        header(
            "end_to_end: accepted -> delivered with one arq worker (PostgreSQL + Redis)",
            f"(a) {THROUGHPUT_MESSAGES:,} messages in batches of {BATCH:,}; (b) {RATE:g}/s "
            f"offered open-loop for {DURATION:g} s; baseline: raw asyncpg + arq pipeline",
        )
        report(asyncio.run(measure(db_url, port, key, raw_queue)))


def main() -> int:
    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
