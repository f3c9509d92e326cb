"""Benchmark: an experiment report's SQL aggregation over 1,000,000 messages on PostgreSQL.

On a fresh database (migrated by the project), asyncpg COPY loads one experiment with four
variants (a 10% holdout and three 30% arms): ``--rows`` messages (default 1,000,000) to a
quarter as many customers (4 messages each), every customer assigned, three message events
per message (3,000,000), and the conversions of 2-3% of the customers. Null patterns are
realistic: ~97% sent, ~92% of those delivered, a few % clicked (never in the holdout, which
carries no link), a cost on sent messages only.

- project: ``arm_counts`` + ``daily_counts`` (app/experiments/report_repository.py), the
  report's whole aggregation, through the project's engine and session;
- baseline: a plain GROUP BY count over the same tables with asyncpg:
  ``SELECT variant, count(*) FROM messages WHERE experiment_id = $1 GROUP BY variant``, the
  same on experiment_assignments and conversions, and
  ``SELECT type, count(*) FROM message_events GROUP BY type``.

Each side: best of 3 after a warm-up, alternating. Figures: both times and their ratio
(target <= 3x). ``--explain`` prints the plans of the project's queries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench._support import header, ms, postgres_database, ratio_text, row, run_main

ROUNDS = 3
TARGET = 3.0
CHUNK_CUSTOMERS = 20_000
EXPERIMENT_ID = "exp_bench_report"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
# variant of customer i: i % 10 == 0 holdout, 1-3 a, 4-6 b, 7-9 c
ARMS = [
    "holdout",
    "sms_a",
    "sms_a",
    "sms_a",
    "sms_b",
    "sms_b",
    "sms_b",
    "wechat_c",
    "wechat_c",
    "wechat_c",
]
CLICK = {"holdout": 0.0, "sms_a": 0.04, "sms_b": 0.06, "wechat_c": 0.05}
CONVERT = {"holdout": 0.02, "sms_a": 0.025, "sms_b": 0.03, "wechat_c": 0.028}
COST = {"holdout": Decimal("0.045"), "sms_a": Decimal("0.045"), "sms_b": Decimal("0.045")}
COST_WECHAT = Decimal("0.010")
MESSAGE_COLUMNS = (
    "id", "owner", "scenario", "customer_id", "recipient", "variables", "channels",
    "channel_index", "channel", "status", "attempts", "channel_attempts", "content", "decision",
    "experiment_id", "variant", "cost", "created_at", "updated_at", "sent_at", "delivered_at",
    "clicked_at",
)  # fmt: skip
EVENT_COLUMNS = ("message_id", "type", "at", "detail")
CONVERSION_COLUMNS = (
    "id", "owner", "customer_id", "event", "value", "occurred_at", "experiment_id", "variant",
    "created_at",
)  # fmt: skip
BASELINE_QUERIES = (
    "SELECT variant, count(*) FROM messages WHERE experiment_id = $1 GROUP BY variant",
    "SELECT variant, count(*) FROM experiment_assignments WHERE experiment_id = $1 "
    "GROUP BY variant",
    "SELECT variant, count(*) FROM conversions WHERE experiment_id = $1 GROUP BY variant",
    "SELECT type, count(*) FROM message_events GROUP BY type",
)


def _message(
    i: int, k: int, variant: str, rng: random.Random, created: datetime
) -> tuple[Any, ...]:
    sent = rng.random() < 0.97
    delivered = sent and rng.random() < 0.92
    clicked = delivered and rng.random() < CLICK[variant]
    status = "delivered" if delivered else "sent" if sent else "failed"
    channel = "wechat" if variant == "wechat_c" else "sms"
    cost = (COST.get(variant, COST_WECHAT)) if sent else None
    at = created + timedelta(seconds=2)
    return (
        f"M{i:09d}{k}", "core-banking", "account_movement", f"C{i:08d}", "{}", "{}",
        f'["{channel}"]', 0, channel, status, 1, 1, "{}", "{}", EXPERIMENT_ID, variant, cost,
        created, at, at if sent else None, at + timedelta(seconds=3) if delivered else None,
        at + timedelta(minutes=20) if clicked else None,
    )  # fmt: skip


def _events(message: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    message_id, status, created = message[0], message[9], message[17]
    last = status if status != "delivered" else "delivered"
    return [
        (message_id, "accepted", created, "{}"),
        (message_id, "queued", created, "{}"),
        (message_id, last, created + timedelta(seconds=5), "{}"),
    ]


def _conversions(i: int, variant: str, rng: random.Random, at: datetime) -> list[tuple[Any, ...]]:
    if rng.random() >= CONVERT[variant]:
        return []
    count = 2 if rng.random() < 0.1 else 1
    return [
        (
            f"V{i:09d}{k}",
            "core-banking",
            f"C{i:08d}",
            "purchase" if k == 0 else "signup",
            Decimal(rng.randrange(1_000, 500_000)) / 100,
            at + timedelta(hours=5 + k),
            EXPERIMENT_ID,
            variant,
            at + timedelta(hours=5 + k),
        )
        for k in range(count)
    ]


def chunks(customers: int) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """The rows of CHUNK_CUSTOMERS customers at a time, deterministic for a given size."""
    rng = random.Random(20261123)
    span = 14 * 86_400 / max(1, customers)  # assignments spread over two weeks
    for start in range(0, customers, CHUNK_CUSTOMERS):
        rows: dict[str, list[tuple[Any, ...]]] = {"a": [], "m": [], "e": [], "c": []}
        for i in range(start, min(customers, start + CHUNK_CUSTOMERS)):
            variant = ARMS[i % 10]
            assigned = T0 + timedelta(seconds=i * span)
            rows["a"].append((EXPERIMENT_ID, f"C{i:08d}", variant, assigned))
            for k in range(4):
                message = _message(i, k, variant, rng, assigned + timedelta(hours=6 * k))
                rows["m"].append(message)
                rows["e"].extend(_events(message))
            rows["c"].extend(_conversions(i, variant, rng, assigned))
        yield rows


async def _insert_experiment(db: Any) -> None:
    variants = [
        {
            "key": k,
            "weight": w,
            "channel": None,
            "template": None,
            "format": None,
            "holdout": k == "holdout",
        }
        for k, w in (("holdout", 10), ("sms_a", 30), ("sms_b", 30), ("wechat_c", 30))
    ]
    await db.execute(
        "INSERT INTO experiments (id, key, kind, segment, variants, control, coverage, salt, "
        "metric, attribution_hours, confidence, min_sample, target_lift, auto_winner, status, "
        "created_at, updated_at) VALUES ($1, 'bench', 'patch', 'everyone', $2, 'holdout', 1, "
        "'bench', 'converted', 72, 0.95, 1000, 0.1, false, 'running', $3, $3)",
        EXPERIMENT_ID,
        json.dumps(variants),
        T0,
    )


async def load(db: Any, messages: int) -> dict[str, int]:
    """COPY the experiment's rows; how many of each were loaded."""
    await _insert_experiment(db)
    loaded = {"assignments": 0, "messages": 0, "message_events": 0, "conversions": 0}
    for rows in chunks(messages // 4):
        await db.copy_records_to_table(
            "experiment_assignments", records=rows["a"],
            columns=["experiment_id", "customer_id", "variant", "assigned_at"],
        )  # fmt: skip
        await db.copy_records_to_table("messages", records=rows["m"], columns=MESSAGE_COLUMNS)
        await db.copy_records_to_table("message_events", records=rows["e"], columns=EVENT_COLUMNS)
        await db.copy_records_to_table("conversions", records=rows["c"], columns=CONVERSION_COLUMNS)
        for key, name in (("a", "assignments"), ("m", "messages"), ("e", "message_events")):
            loaded[name] += len(rows[key])
        loaded["conversions"] += len(rows["c"])
    await db.execute("VACUUM ANALYZE")
    return loaded


async def best_of(step: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return min(times)


async def explain(url: str) -> None:
    """Print EXPLAIN ANALYZE of each of the project's queries."""
    from app.experiments.report_repository import report_statements

    db = await _connect(url)
    engine, sessions, experiment = await _project(url)
    async with sessions() as session:
        statements = report_statements(session, experiment)
    for statement in statements:
        compiled = statement.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
        plan = await db.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}")
        print("\n".join(r[0] for r in plan), "\n", flush=True)
    await db.close()
    await engine.dispose()


async def _connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(url)


async def _project(url: str) -> tuple[Any, Any, Any]:
    from app.db import create_engine, create_sessionmaker
    from app.experiments import repository

    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        experiment = await repository.by_id(session, EXPERIMENT_ID)
    return engine, sessions, experiment


async def measure(url: str) -> tuple[float, float, list[Any]]:
    """(project seconds, baseline seconds, the project's arm counts)."""
    from app.experiments.report_repository import arm_counts, daily_counts

    db = await _connect(url)
    engine, sessions, experiment = await _project(url)
    result: list[Any] = []

    async def project() -> None:
        async with sessions() as session:
            result[:] = await arm_counts(session, experiment)
            await daily_counts(session, experiment)

    async def baseline() -> None:
        for query in BASELINE_QUERIES:
            await (db.fetch(query, EXPERIMENT_ID) if "$1" in query else db.fetch(query))

    await project()  # warm-up: caches, prepared statements, the engine's pool
    await baseline()
    project_times, baseline_times = [], []
    for _ in range(ROUNDS):
        project_times.append(await best_of(project))
        baseline_times.append(await best_of(baseline))
    await db.close()
    await engine.dispose()
    return min(project_times), min(baseline_times), result


def body(messages: int, show_plans: bool) -> None:
    from app.migrate import upgrade

    header(
        "experiment_report: a report's SQL aggregation on PostgreSQL",
        f"{messages:,} messages of one experiment (4 variants), {messages // 4:,} customers, "
        f"{messages * 3:,} message events; best of {ROUNDS}",
    )
    with postgres_database("icc_bench_report") as url:
        upgrade(url)
        started = time.perf_counter()
        loaded = asyncio.run(_load(url, messages))
        counts = ", ".join(f"{v:,} {k}" for k, v in loaded.items())
        row("loaded with COPY", f"{counts} in {time.perf_counter() - started:.1f} s")
        if show_plans:
            asyncio.run(explain(url))
        project, baseline, arms = asyncio.run(measure(url))
    for arm in arms:
        funnel = f"assigned {arm.assigned:,}, sent {arm.sent:,}, delivered {arm.delivered:,}, "
        row(f"  {arm.variant}", funnel + f"clicked {arm.clicked:,}, converted {arm.converted:,}")
    row("report aggregation (arm + daily counts)", ms(project))
    row("baseline: plain GROUP BY counts", ms(baseline))
    verdict = "meets" if project <= TARGET * baseline else "ABOVE"
    row("ratio report / baseline", f"{project / baseline:.2f}x ({verdict} target <= {TARGET}x)")
    row("baseline / report (higher is better)", ratio_text(baseline, project))


async def _load(url: str, messages: int) -> dict[str, int]:
    db = await _connect(url)
    try:
        return await load(db, messages)
    finally:
        await db.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiment_report", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="messages (default 1,000,000)")
    parser.add_argument("--explain", action="store_true", help="print the project's query plans")
    args = parser.parse_args()
    return run_main(lambda: body(max(4, args.rows), args.explain))


if __name__ == "__main__":
    sys.exit(main())
