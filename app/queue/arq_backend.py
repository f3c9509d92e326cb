"""arq on Redis: the scale-out queue. The only module that imports arq."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Worker, func

from app.queue.base import JobHandler, chunked

JOB_NAME = "process_messages"
# How many of the oldest due jobs waiting_since looks at: more than the jobs that all the
# workers run at once, normally.
PEEK = 256


class ArqQueue:
    def __init__(self, redis_url: str, *, queue_name: str, chunk_size: int) -> None:
        self._settings = RedisSettings.from_dsn(redis_url)
        self._queue_name = queue_name
        self._chunk_size = chunk_size
        self._pool: ArqRedis | None = None

    async def start(self) -> None:
        self._pool = await create_pool(self._settings, default_queue_name=self._queue_name)

    @property
    def pool(self) -> ArqRedis:
        if self._pool is None:
            raise RuntimeError("the arq queue is not started")
        return self._pool

    async def enqueue(self, ids: Sequence[str], *, delay: float = 0.0) -> None:
        chunks = list(chunked(ids, self._chunk_size))
        await asyncio.gather(
            *(
                self.pool.enqueue_job(JOB_NAME, chunk, _defer_by=delay if delay > 0 else None)
                for chunk in chunks
            )
        )

    async def ping(self) -> bool:
        return bool(await self.pool.ping())

    async def backlog(self) -> int:
        """Jobs due now in arq's queue (a sorted set scored by the time they may run)."""
        now_ms = int(time.time() * 1000)
        return int(await self.pool.zcount(self._queue_name, "-inf", now_ms))

    async def waiting_since(self) -> datetime | None:
        """The score (enqueue time, or the time a delayed job became due) of the oldest due
        job that no worker runs: arq keeps running jobs in its sorted set, marked by an
        in-progress key (which outlives a killed worker until its timeout: the unclaimed
        messages of such a job count as lost, like those of any job taken). When the PEEK
        oldest all run, the last one's time: a lower bound."""
        now_ms = int(time.time() * 1000)
        due: list[tuple[bytes, float]] = await self.pool.zrangebyscore(
            self._queue_name, "-inf", now_ms, start=0, num=PEEK, withscores=True
        )
        if not due:
            return None
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id, _ in due:
                pipe.exists(in_progress_key_prefix + job_id.decode())
            running = await pipe.execute()
        waiting = [score for (_, score), busy in zip(due, running, strict=True) if not busy]
        if waiting:
            return datetime.fromtimestamp(waiting[0] / 1000, UTC)
        if len(due) < PEEK:
            return None  # every due job runs
        return datetime.fromtimestamp(due[-1][1] / 1000, UTC)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


def build_worker(
    *,
    redis_url: str,
    queue_name: str,
    handler_factory: Callable[[], Awaitable[tuple[JobHandler, Callable[[], Awaitable[None]]]]],
    max_jobs: int,
    burst: bool = False,
    handle_signals: bool = True,
) -> Worker:
    """An arq worker whose single job type hands message ids to ``handler``.

    ``handler_factory`` runs at worker start-up and returns (handler, shutdown).
    """

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["handler"], ctx["shutdown"] = await handler_factory()

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "shutdown" in ctx:
            await ctx["shutdown"]()

    async def process_messages(ctx: dict[str, Any], ids: list[str]) -> None:
        await ctx["handler"](ids)

    return Worker(
        functions=[func(process_messages, name=JOB_NAME, max_tries=1000)],
        on_startup=startup,
        on_shutdown=shutdown,
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue_name,
        max_jobs=max_jobs,
        job_timeout=600,
        keep_result=0,
        # arq sleeps this long between polls even with jobs waiting: it caps jobs/s at
        # max_jobs / poll_delay, so keep it short (10 ms costs Redis 100 polls/s per worker)
        poll_delay=0.01,
        burst=burst,
        handle_signals=handle_signals,
    )


async def run_worker(worker: Worker) -> None:
    """Run until stopped (SIGINT/SIGTERM cancel the main task), then shut down cleanly."""
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        pass
    finally:
        await stop_worker(worker)


async def stop_worker(worker: Worker) -> None:
    """Cancel running jobs (their messages keep their outbox rows, so nothing is lost) and
    close. arq's own close() re-raises the cancellations of the jobs it cancels."""
    if worker.main_task is not None and not worker.main_task.done():
        worker.main_task.cancel()
    jobs = list(worker.tasks.values())
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    worker.tasks.clear()
    await worker.close()
