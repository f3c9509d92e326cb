"""The baseline worker of bench.end_to_end: the same arq worker as ``icc worker`` (built by
app.queue.arq_backend.build_worker, same poll delay and job concurrency), whose job does the
least durable work a delivery needs: one asyncpg ``UPDATE ... WHERE id = ANY($1)`` marking the
job's messages delivered. No claim, lease, channel plugin, sandbox record or event rows.

    python -m bench._raw_worker --database-url postgresql://... --redis-url redis://... --queue Q
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from app.queue.arq_backend import build_worker, run_worker
from app.queue.base import JobHandler
from app.settings import QueueSettings

MARK_DELIVERED = (
    "UPDATE raw_messages SET status = 'delivered', delivered_at = clock_timestamp() "
    "WHERE id = ANY($1::text[])"
)


def handler_factory(
    database_url: str,
) -> Callable[[], Awaitable[tuple[JobHandler, Callable[[], Awaitable[None]]]]]:
    async def factory() -> tuple[JobHandler, Callable[[], Awaitable[None]]]:
        import asyncpg

        pool: Any = await asyncpg.create_pool(database_url, min_size=1, max_size=10)

        async def handle(ids: list[str]) -> None:
            await pool.execute(MARK_DELIVERED, ids)

        async def shutdown() -> None:
            await pool.close()

        return handle, shutdown

    return factory


async def run(database_url: str, redis_url: str, queue: str) -> None:
    # arq binds the worker to the loop it is built in: build it inside the running loop
    worker = build_worker(
        redis_url=redis_url,
        queue_name=queue,
        handler_factory=handler_factory(database_url),
        max_jobs=QueueSettings().workers,
    )
    await run_worker(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.database_url, args.redis_url, args.queue))


if __name__ == "__main__":
    main()
