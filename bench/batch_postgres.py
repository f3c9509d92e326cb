"""Benchmark 2: ``POST /v1/messages/batch`` with 10,000 items on PostgreSQL.

Compares, in the same run and on the same fresh database, alternating rounds of:

- project: ``icc serve`` as a uvicorn process in the scale-out configuration (PostgreSQL, arq
  queue on Redis, no worker, so the API only accepts), called over loopback HTTP with httpx;
  timed from sending the request until the 10,000 messages are committed AND their jobs are
  in the Redis queue (the batch endpoint answers before its transaction commits, so the
  response time alone would flatter it; it is printed too);
- baseline: asyncpg ``copy_records_to_table`` of the very rows the project just wrote, into
  ``LIKE messages INCLUDING ALL`` (same columns, types, primary key, unique constraint and
  indexes; no foreign keys). A second line copies all the rows the project writes per message
  (message, its events and its outbox row) for reference.

Figures: accepted recipients/s, COPY rows/s, project/baseline (target >= 0.2x).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

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
    median,
    ms,
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

ITEMS = 10_000
ROUNDS = 3
TARGET = 0.2
CHUNK = 200  # the project's default queue chunk size (ICC_QUEUE__CHUNK_SIZE)
TABLES = ("messages", "message_events", "outbox")  # what the project writes per message


def batch_body(count: int, tag: str) -> bytes:
    """A batch for unknown customers whose phone comes in ``recipient`` (SMS only). Each
    item has its own amounts, as account movements do: the rendered content and the stored
    variables differ from row to row."""
    items = [
        {
            "customer_id": f"{tag}{i:06d}",
            "recipient": {"phone": f"139{i:08d}"},
            "variables": {
                **VARIABLES,
                "account_tail": f"{i * 7 % 10_000:04d}",
                "direction": "收入" if i % 3 else "支出",
                "amount": f"{i * 37 % 100_000 / 100:.2f}",
                "balance": f"{i * 7_919 % 10_000_000 / 100:.2f}",
            },
        }
        for i in range(count)
    ]
    return orjson.dumps({"scenario": "account_movement", "items": items})


@dataclass(frozen=True)
class ProjectRound:
    response: float  # seconds until the 202 arrived
    committed: float  # until every message was committed
    done: float  # until committed and every job was in the Redis queue

    @property
    def rate(self) -> float:
        return ITEMS / self.done


@dataclass(frozen=True)
class CopyRound:
    messages: float  # seconds to COPY the message rows
    all_rows: float  # seconds to COPY messages, events and outbox rows
    all_count: int

    @property
    def rate(self) -> float:
        return ITEMS / self.messages


class Bench:
    def __init__(self, db_url: str, port: int, key: str, queue: str) -> None:
        self.db_url, self.port, self.key, self.queue = db_url, port, key, queue
        self.db: Any = None  # asyncpg connection
        self.redis: Any = None

    async def __aenter__(self) -> Bench:
        import asyncpg
        from redis.asyncio import Redis

        self.db = await asyncpg.connect(self.db_url)
        self.redis = Redis.from_url(REDIS_URL)
        for table in TABLES:
            await self.db.execute(f"CREATE TABLE copy_{table} (LIKE {table} INCLUDING ALL)")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.redis.aclose()
        await self.db.close()

    async def truncate(self) -> None:
        await self.db.execute("TRUNCATE messages, message_events, outbox CASCADE")
        await self.db.execute("TRUNCATE " + ", ".join(f"copy_{t}" for t in TABLES))
        await asyncio.to_thread(purge_arq_queue, self.queue)

    async def post_batch(self, body: bytes, batch_key: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        if batch_key is not None:
            headers["Idempotency-Key"] = batch_key
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{self.port}", timeout=120) as c:
            response = await c.post("/v1/messages/batch", content=body, headers=headers)
        if response.status_code != 202:
            raise BenchError(f"batch answered {response.status_code}: {response.text[:500]}")
        result: dict[str, Any] = orjson.loads(response.content)
        return result

    async def wait_accepted(self, count: int, timeout: float = 120) -> tuple[float, float]:
        """Poll until ``count`` messages are committed and their jobs queued; the moments."""
        committed = 0.0
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if not committed and await self.db.fetchval("SELECT count(*) FROM messages") >= count:
                committed = time.perf_counter()
            if committed and await self.redis.zcard(self.queue) >= -(-count // CHUNK):
                return committed, time.perf_counter()
            await asyncio.sleep(0.005)
        raise BenchError(f"{count} messages were not committed and queued within {timeout} s")

    async def project_round(self, body: bytes, batch_key: str | None = None) -> ProjectRound:
        started = time.perf_counter()
        result = await self.post_batch(body, batch_key)
        answered = time.perf_counter()
        if result["accepted"] != ITEMS:
            raise BenchError(f"the batch accepted {result['accepted']} of {ITEMS} items")
        committed, done = await self.wait_accepted(ITEMS)
        return ProjectRound(answered - started, committed - started, done - started)

    async def copy_round(self) -> CopyRound:
        rows = {t: await self.db.fetch(f"SELECT * FROM {t}") for t in TABLES}
        messages = await self._copy({"messages": rows["messages"]})
        await self.db.execute("TRUNCATE " + ", ".join(f"copy_{t}" for t in TABLES))
        all_rows = await self._copy(rows)
        return CopyRound(messages, all_rows, sum(len(r) for r in rows.values()))

    async def _copy(self, rows: dict[str, list[Any]]) -> float:
        started = time.perf_counter()
        async with self.db.transaction():
            for table, records in rows.items():
                if not records:  # e.g. no events: accepted messages store none of their own
                    continue
                columns = list(records[0].keys())
                await self.db.copy_records_to_table(
                    f"copy_{table}", records=records, columns=columns
                )
        return time.perf_counter() - started


@dataclass(frozen=True)
class Rounds:
    project: list[ProjectRound]
    copies: list[CopyRound]
    keyed: list[ProjectRound]  # the same batch sent with an Idempotency-Key header


async def measure(bench: Bench) -> Rounds:
    await bench.post_batch(batch_body(500, "W"))  # warm caches, pools and compiled SQL
    await bench.post_batch(batch_body(500, "V"), "warm-up")  # and the keyed path's
    body = batch_body(ITEMS, "B")
    rounds = Rounds([], [], [])
    for index in range(ROUNDS):
        await bench.truncate()
        rounds.project.append(await bench.project_round(body))
        rounds.copies.append(await bench.copy_round())
        # Every item gets the key "<header>:<index>": the idempotent path (the unique
        # constraint decides), which keyless items do not need
        await bench.truncate()
        rounds.keyed.append(await bench.project_round(body, f"bench-batch-{index}"))
    return rounds


def _project_row(label: str, p: ProjectRound) -> None:
    row(
        label,
        f"202 after {ms(p.response)}, committed after {ms(p.committed)}, queued after "
        f"{ms(p.done)} -> {p.rate:,.0f} recipients/s",
    )


def report(rounds: Rounds) -> None:
    project, copies = rounds.project, rounds.copies
    for index, (p, c, k) in enumerate(zip(project, copies, rounds.keyed, strict=True), 1):
        _project_row(f"round {index}  icc batch of {ITEMS}", p)
        row(
            f"round {index}  asyncpg COPY",
            f"{ITEMS} message rows in {ms(c.messages)} -> {c.rate:,.0f} rows/s; all "
            f"{c.all_count} rows (messages+events+outbox) in {ms(c.all_rows)}",
        )
        _project_row(f"round {index}  icc batch, Idempotency-Key", k)
    project_rate = median([p.rate for p in project])
    keyed_rate = median([k.rate for k in rounds.keyed])
    copy_rate = median([c.rate for c in copies])
    all_rate = median([ITEMS / c.all_rows for c in copies])
    print()
    row("icc batch accepted (median)", f"{project_rate:,.0f} recipients/s")
    row("  the same with Idempotency-Key (median)", f"{keyed_rate:,.0f} recipients/s")
    row("COPY of the message rows (median)", f"{copy_rate:,.0f} rows/s")
    row("COPY of all rows per message (median)", f"{all_rate:,.0f} messages/s")
    row("ratio icc / COPY messages", ratio_text(project_rate, copy_rate, target=TARGET))
    row("ratio icc / COPY all rows", ratio_text(project_rate, all_rate))
    row("ratio icc with Idempotency-Key / COPY", ratio_text(keyed_rate, copy_rate))


def start_api(ws: Workspace, db_url: str, queue: str) -> tuple[int, str]:
    env = child_env(ICC_DATABASE_URL=db_url, ICC_REDIS_URL=REDIS_URL, ICC_QUEUE__NAME=queue)
    key = demo_key(ws, env)
    port = free_port()
    api = ws.spawn("icc-serve", [*icc_command(), "serve", "--port", str(port)], env=env)
    wait_http_ready(api, port, path="/readyz")
    ws.stack.callback(report_logged_errors, [api])
    return port, key


def body() -> None:
    check_redis()
    queue = unique_name("icc:bench:batch")
    with postgres_database("icc_bench_batch") as db_url, workspace("batch") as ws:
        ws.stack.callback(purge_arq_queue, queue)
        port, key = start_api(ws, db_url, queue)
        header(
            f"batch_postgres: POST /v1/messages/batch of {ITEMS:,} items on PostgreSQL",
            "icc serve (uvicorn process, PostgreSQL + arq/Redis, accept only) over loopback "
            f"HTTP (httpx) vs asyncpg COPY of the same rows; {ROUNDS} alternating rounds",
        )

        async def run() -> Rounds:
            async with Bench(db_url, port, key, queue) as bench:
                return await measure(bench)

        report(asyncio.run(run()))


def main() -> int:
    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
