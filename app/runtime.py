"""What one process of the platform holds: settings, database, queue and channel providers.

``icc serve`` embedded: in-process queue, consumers, sweeper and campaign runner in one process.
``icc serve`` with Redis: accepts only, enqueues to arq.
``icc worker``: arq consumer plus the sweeper and the campaign runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Coroutine
from typing import Any, NamedTuple

from redis.asyncio import Redis
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.schemas import Role
from app.auth.service import KeyCache, ensure_key
from app.batching import Coalescer
from app.campaigns import runner as campaigns
from app.db import (
    checkpoint_forever,
    commit,
    create_engine,
    create_sessionmaker,
    passing_db_error,
)
from app.errors import AppError, InternalError
from app.experiments import autowinner
from app.messages import delivery, recorded_sends, tasks
from app.messages.outcomes import Claimed, Outcome
from app.messages.repository import apply_outcomes
from app.messages.service import Accepted, AcceptOutcome, AcceptRequest, accept_many
from app.queue.base import MessageQueue
from app.queue.inprocess import InProcessQueue
from app.settings import Settings
from channels.accounts import load_accounts
from channels.base import ProviderContext
from channels.ratelimit import LocalRateLimiter, RedisRateLimiter
from channels.registry import ProviderRegistry

log = logging.getLogger("icc.runtime")

# Writing a group of outcomes: attempts, and the pauses between them (doubling, capped):
# some 7 s in all, for a failover to finish. Errors of the statement itself are not retried
# (db.passing_db_error).
RECORD_ATTEMPTS = 8
RECORD_BACKOFF = 0.1
RECORD_BACKOFF_MAX = 2.0


class _WriteGroups(NamedTuple):
    """How the worker's claims and outcomes are grouped into transactions: at most
    ``claim_slices`` slices' claims (each at most ``queue.concurrency`` ids) or
    ``record_batch`` outcomes in one, and how many of each may run at once (on different
    messages)."""

    claim_slices: int
    claims_at_once: int
    record_batch: int
    records_at_once: int


# SQLite has one writer: overlapping transactions would only queue, so there is one at a
# time, with larger outcome groups. PostgreSQL: claims (and outcomes) waiting behind a
# running transaction are written by another one beside it instead of queueing. (Claims of
# 16 slices cost PostgreSQL about a tenth less CPU per message than claims of 8 in
# bench.sms_throughput.)
_SQLITE_GROUPS = _WriteGroups(
    claim_slices=16, claims_at_once=1, record_batch=500, records_at_once=1
)
_POSTGRES_GROUPS = _WriteGroups(
    claim_slices=16, claims_at_once=4, record_batch=250, records_at_once=2
)


def build_providers(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: Redis | None
) -> ProviderRegistry:
    """The accounts of ICC_PROVIDERS_FILE, or a sandbox provider per channel without it."""
    accounts = (
        load_accounts(settings.providers_file)
        if settings.providers_file
        else ProviderRegistry.sandbox_accounts()
    )
    context = ProviderContext(sessionmaker=sessionmaker, redis_url=settings.redis_url)
    limiter = RedisRateLimiter(redis) if redis is not None else LocalRateLimiter()
    return ProviderRegistry.build(accounts, context, limiter=limiter)


class Runtime:
    def __init__(self, settings: Settings, *, run_workers: bool) -> None:
        self.settings = settings
        self.run_workers = run_workers
        self.engine = create_engine(settings.database_url)
        self.sessionmaker = create_sessionmaker(self.engine)
        # SQLite: a second engine that reads without queueing behind the one writer
        self.read_engine = (
            create_engine(settings.database_url, read_only=True)
            if settings.is_sqlite
            else self.engine
        )
        self.read_sessionmaker = create_sessionmaker(self.read_engine)
        self.redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        self.providers = build_providers(settings, self.sessionmaker, self.redis)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:64]
        self.keys = KeyCache(settings.api.key_cache_seconds)
        self.queue = self._make_queue()
        self._accepter: Coalescer[AcceptRequest, AcceptOutcome] = Coalescer(
            self._accept_group, max_batch=500
        )
        groups = _SQLITE_GROUPS if settings.is_sqlite else _POSTGRES_GROUPS
        self._recorder: Coalescer[Outcome, bool] = Coalescer(
            self._record_group, max_batch=groups.record_batch, concurrency=groups.records_at_once
        )
        self._claimer: Coalescer[list[str], list[Claimed]] = Coalescer(
            self._claim_group, max_batch=groups.claim_slices, concurrency=groups.claims_at_once
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._campaigns: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._evaluator: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()

    def _make_queue(self) -> MessageQueue:
        q = self.settings.queue
        if self.settings.redis_url:
            from app.queue.arq_backend import ArqQueue

            return ArqQueue(self.settings.redis_url, queue_name=q.name, chunk_size=q.chunk_size)
        workers = q.workers if self.run_workers else 0
        return InProcessQueue(self._process_gathered, workers=workers, chunk_size=q.chunk_size)

    async def start(self) -> None:
        await self.queue.start()
        if self.settings.bootstrap_admin_key is not None:
            await self._ensure_bootstrap_key(self.settings.bootstrap_admin_key.get_secret_value())
        if self.run_workers:
            self._sweeper = asyncio.create_task(tasks.sweep_forever(self))
            self._campaigns = asyncio.create_task(campaigns.run_forever(self))
            self._evaluator = asyncio.create_task(autowinner.evaluate_forever(self))
        if self.settings.is_sqlite:
            self._checkpointer = asyncio.create_task(checkpoint_forever(self.read_engine))

    async def _ensure_bootstrap_key(self, plaintext: str) -> None:
        for attempt in range(3):
            try:
                async with self.sessionmaker() as session:
                    await ensure_key(
                        session, name="bootstrap-admin", role=Role.admin, plaintext=plaintext
                    )
                    await session.commit()
                return
            except IntegrityError:  # another process created it at the same moment
                if attempt == 2:
                    raise

    async def accept(self, request: AcceptRequest) -> Accepted:
        """Accept one message. Concurrent calls are written together (group commit)."""
        outcome = await self._accepter.submit(request)
        if isinstance(outcome, AppError):
            raise outcome
        return outcome

    async def _accept_group(self, requests: list[AcceptRequest]) -> list[AcceptOutcome]:
        try:
            return await self._write_group(requests)
        except Exception:
            if len(requests) == 1:
                log.exception("accepting a message failed")
                return [InternalError("the message could not be stored; it was not accepted")]
        # One request broke the group's transaction: write them one by one, so that only
        # that one fails.
        return [(await self._accept_group([request]))[0] for request in requests]

    async def _write_group(self, requests: list[AcceptRequest]) -> list[AcceptOutcome]:
        async with self.sessionmaker() as session:
            outcomes = await accept_many(
                session, requests, queue=self.queue, settings=self.settings
            )
            await commit(session)
        return outcomes

    async def claim(self, ids: list[str]) -> list[Claimed]:
        """Lease the given messages that are due; slices claimed at the same time share
        one transaction."""
        return await self._claimer.submit(ids)

    async def _claim_group(self, slices: list[list[str]]) -> list[list[Claimed]]:
        claimed = await delivery.claim(self, list(dict.fromkeys(i for s in slices for i in s)))
        by_id = {c.id: c for c in claimed}
        # pop: an id in two slices at once is sent by one of them only
        return [[c for i in ids if (c := by_id.pop(i, None)) is not None] for ids in slices]

    def record_outcome(self, outcome: Outcome) -> asyncio.Future[bool]:
        """Write an attempt's outcome (grouped with others finishing at the same time); the
        future says False when this worker's claim was overtaken and the outcome dropped."""
        return self._recorder.submit_nowait(outcome)

    @property
    def recording_backlog(self) -> int:
        """Outcomes waiting for their transaction."""
        return self._recorder.backlog

    def settle_later(self, settling: Coroutine[Any, Any, None]) -> None:
        """Run a job's last steps (awaiting its outcomes' records, requeueing retries) in
        the background; ``close`` waits for them."""
        task = asyncio.create_task(settling)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _record_group(self, outcomes: list[Outcome]) -> list[bool]:
        """Write a group of outcomes; a failure the database may not repeat (a deadlock, a
        dropped connection, a failover) is retried: these messages went out, and an outcome
        lost would have them sent again once their leases lapse. (A retry after a commit
        that did happen finds them no longer held and changes nothing.) Providers that keep
        their sends in the database (the sandbox) write those of the outcomes written in the
        same transaction (ChannelProvider.record_sends)."""
        try:
            return await self._write_outcomes(outcomes)
        finally:  # written, or given up: their leases lapse and they are sent again
            recorded_sends.forget(self, recorded_sends.sends_of(outcomes))

    async def _write_outcomes(self, outcomes: list[Outcome]) -> list[bool]:
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                async with self.sessionmaker() as session:
                    held = await apply_outcomes(session, outcomes, worker=self.worker_id)
                    written = recorded_sends.written(outcomes, held)
                    sent = [o for o, ok in zip(outcomes, written, strict=True) if ok]
                    await recorded_sends.record(self, session, recorded_sends.sends_of(sent))
                    await session.commit()
                return written
            except Exception as exc:
                if attempt == RECORD_ATTEMPTS or not passing_db_error(exc):
                    raise
                # the class only: the statement's text and parameters carry message data
                cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
                error = type(cause).__name__
                log.warning(
                    "recording outcomes failed; retrying",
                    extra={"messages": len(outcomes), "attempt": attempt, "error": error},
                )
                await asyncio.sleep(min(RECORD_BACKOFF * 2 ** (attempt - 1), RECORD_BACKOFF_MAX))
        raise AssertionError("unreachable")

    async def process(self, ids: list[str]) -> None:
        """Send the given messages (the queue's job handler)."""
        await delivery.process_many(self, ids)

    async def _process_gathered(self, ids: list[str]) -> None:
        """The in-process queue's handler. Its jobs (at most a chunk) are gathered while
        another is sent, and usually sent alone. With local providers only (the sandbox:
        the embedded default) a job is claimed as one slice and sent by one task, message
        after message: one claim and one outcome group instead of several, and no task per
        message (they wait for nothing: concurrency would gain nothing). Real providers keep
        the slices, each claimed shortly before it is sent: a whole chunk queued at once for
        a pool of a few connections would run past its claim's lease."""
        if self.providers.all_local():
            await delivery.process_many(self, ids, step=len(ids), senders=1)
        else:
            await delivery.process_many(self, ids)

    async def close(self) -> None:
        # the campaign runner first: a chunk rolled back by the cancel is simply run again
        for task in (self._campaigns, self._sweeper, self._evaluator, self._checkpointer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.queue.close()  # no more sends start; then let pending writes finish
        if self._settling:
            await asyncio.wait(self._settling, timeout=10)
        await self._accepter.close()
        await self._recorder.close()
        await self._claimer.close()
        await self.providers.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
