"""The bound of bench.sms_throughput (``--db-bound``): the raw aiohttp loop of bench._sms_raw
doing, by hand, the database writes the worker does for each message, in its own process.

Not the project's code: the smallest program that keeps the same durable record of every
send, to tell what these writes cost on this machine from what the project adds to them.
For each message, as the worker writes them (the same rows, columns and events):

- the claim, a slice of ``step`` messages ahead of the sends (two slices ahead, as the
  worker's lookahead): ``status = 'sending'``, the lease, the attempt counts, and the
  ``sending`` event, in one statement and transaction;
- the send: the same JSON body posted over one aiohttp session (``concurrency``
  connections and coroutines), its JSON answer read;
- the outcome, grouped (one transaction in flight at a time, taking every outcome known
  when it starts): ``status = 'sent'`` with provider, provider id, cost and times, the
  ``sent`` event, and the outbox row deleted.

There is no queue (the ids come from a file), no rate limiter, no routing, circuit or retry
logic: what remains is the sending loop and the database. asyncpg, no SQLAlchemy.

    python -m bench._sms_raw_db --url URL --dsn DSN --ids-file F --text-file F \
        --concurrency C --result FILE

writes ``{"cpu": <CPU seconds of the loop>, "sent": N}`` to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from app.gctune import freeze_startup_heap
from bench._sms_raw import raw_body

STEP = 100  # messages per claim
LOOKAHEAD = 2  # claims ahead of the slice being sent
WORKER = "raw-db-bound"
PROVIDER = "gateway-bench"

_CLAIM = """
WITH claimed AS (
    UPDATE messages
    SET status = 'sending', lease_owner = $2, lease_until = $3,
        attempts = attempts + 1, channel_attempts = channel_attempts + 1, updated_at = $4
    WHERE id = ANY($1::text[]) AND status = 'queued'
    RETURNING id, recipient ->> 'phone' AS phone, attempts
), sending AS (
    INSERT INTO message_events (message_id, type, at, detail)
    SELECT id, 'sending', $4, jsonb_build_object('channel', 'sms', 'attempt', attempts)
    FROM claimed
)
SELECT id, phone FROM claimed
"""

_OUTCOMES = """
WITH changed AS (
    UPDATE messages AS m
    SET status = 'sent', status_reason = NULL, channel = 'sms', provider = $5,
        provider_message_id = v.provider_id, sent_at = v.at, cost = 0,  -- the account's default
        lease_until = NULL, updated_at = v.at
    FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS v(id, provider_id, at)
    WHERE m.id = v.id AND m.lease_owner = $6
    RETURNING m.id
), added AS (
    INSERT INTO message_events (message_id, type, at, detail)
    SELECT v.id, 'sent', v.at, v.detail::jsonb
    FROM unnest($1::text[], $3::timestamptz[], $4::text[]) AS v(id, at, detail)
    WHERE v.id IN (SELECT id FROM changed)
), finished AS (
    DELETE FROM outbox WHERE message_id IN (SELECT id FROM changed)
)
SELECT count(*) FROM changed
"""


class Loop:
    def __init__(self, url: str, text: str, pool: asyncpg.Pool, concurrency: int) -> None:
        self.url, self.text, self.pool, self.concurrency = url, text, pool, concurrency
        self.outcomes: list[tuple[str, str, datetime, str]] = []
        self.recording: asyncio.Task[None] | None = None
        self.written = 0

    async def claim(self, ids: list[str]) -> list[tuple[str, str]]:
        now = datetime.now(UTC)
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(_CLAIM, ids, WORKER, now + timedelta(seconds=60), now)
        return [(r["id"], r["phone"]) for r in rows]

    async def run(self, ids: list[str]) -> None:
        claims = _Claims(self, [ids[i : i + STEP] for i in range(0, len(ids), STEP)])
        headers = {"Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def sender() -> None:
                while (claimed := await claims.next()) is not None:
                    message_id, to = claimed
                    body = raw_body(to, self.text, message_id)
                    started = time.perf_counter()
                    async with session.post(self.url, data=body, headers=headers) as answer:
                        reply = orjson.loads(await answer.read())
                    if answer.status != 200 or reply.get("code") != "0":
                        raise SystemExit(f"bound: a send failed with HTTP {answer.status}")
                    self.record(message_id, reply["data"]["msgid"], started)

            await asyncio.gather(*(sender() for _ in range(self.concurrency)))
        while self.recording is not None:
            await self.recording
        if self.written != len(ids):
            raise SystemExit(f"bound: {self.written} outcomes written for {len(ids)} messages")

    def record(self, message_id: str, provider_id: str, started: float) -> None:
        detail = {
            "channel": "sms",
            "provider": PROVIDER,
            "provider_message_id": provider_id,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        now = datetime.now(UTC)
        self.outcomes.append((message_id, provider_id, now, orjson.dumps(detail).decode()))
        if self.recording is None:
            self.recording = asyncio.ensure_future(self.write())

    async def write(self) -> None:
        """Group commit: every outcome known when a transaction starts goes in it."""
        while self.outcomes:
            group, self.outcomes = self.outcomes, []
            ids, provider_ids, at, details = (list(c) for c in zip(*group, strict=True))
            async with self.pool.acquire() as connection, connection.transaction():
                self.written += await connection.fetchval(
                    _OUTCOMES, ids, provider_ids, at, details, PROVIDER, WORKER
                )
        self.recording = None


class _Claims:
    """The claimed messages slice by slice, ``LOOKAHEAD`` claims ahead of the sends (the
    worker's delivery._Claims, without its deadlines)."""

    def __init__(self, loop: Loop, slices: list[list[str]]) -> None:
        self.loop = loop
        self.slices = iter(slices)
        self.current: Iterator[tuple[str, str]] = iter(())
        self.upcoming: deque[asyncio.Future[list[tuple[str, str]]]] = deque()
        for _ in range(LOOKAHEAD):
            self.claim_next()

    def claim_next(self) -> None:
        ids = next(self.slices, None)
        if ids is not None:
            self.upcoming.append(asyncio.ensure_future(self.loop.claim(ids)))

    async def next(self) -> tuple[str, str] | None:
        while (message := next(self.current, None)) is None:
            if not self.upcoming:
                return None
            upcoming = self.upcoming[0]
            claimed = await upcoming
            if self.upcoming and self.upcoming[0] is upcoming:  # the first sender back
                self.upcoming.popleft()
                self.current = iter(claimed)
                self.claim_next()
        return message


async def run(args: argparse.Namespace) -> None:
    text = Path(args.text_file).read_text(encoding="utf-8")
    ids = Path(args.ids_file).read_text(encoding="utf-8").split()
    pool = await asyncpg.create_pool(args.dsn, min_size=4, max_size=8)
    loop = Loop(args.url, text, pool, args.concurrency)
    freeze_startup_heap()
    started = time.process_time()
    await loop.run(ids)
    cpu = time.process_time() - started
    await pool.close()
    Path(args.result).write_bytes(orjson.dumps({"cpu": cpu, "sent": len(ids)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--dsn", required=True, help="postgresql://... (asyncpg)")
    parser.add_argument("--ids-file", required=True, help="message ids, whitespace-separated")
    parser.add_argument("--text-file", required=True, help="the SMS text, UTF-8")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
