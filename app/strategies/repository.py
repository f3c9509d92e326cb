"""All SQL of segments and strategies."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    SQLColumnExpression,
    String,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.sqlite import aiosqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from app.campaigns.models import Campaign
from app.campaigns.schemas import FINAL_STATUSES
from app.customers.models import Customer
from app.db import dialect_name, hold_locks, lock_bucket, lock_key, read_sqlite_utc
from app.experiments.models import Experiment
from app.messages.models import Message, reaches_at
from app.sqlite_inline import run_sql
from app.strategies.models import Segment, Strategy
from app.timeutil import as_utc, utcnow
from strategies.rules import Rule
from strategies.sql import compile_sql


async def segment(session: AsyncSession, key: str) -> Segment | None:
    return await session.scalar(select(Segment).where(Segment.key == key))


async def segments_page(
    session: AsyncSession, *, after_key: str | None, limit: int
) -> list[Segment]:
    stmt = select(Segment).order_by(Segment.key).limit(limit)
    if after_key:
        stmt = stmt.where(Segment.key > after_key)
    return list((await session.scalars(stmt)).all())


async def segments_by_keys(session: AsyncSession, keys: Sequence[str]) -> dict[str, Segment]:
    rows = await session.scalars(select(Segment).where(Segment.key.in_(list(keys))))
    return {s.key: s for s in rows}


async def strategy(session: AsyncSession, key: str) -> Strategy | None:
    return await session.scalar(select(Strategy).where(Strategy.key == key))


async def strategies_page(
    session: AsyncSession, *, after_key: str | None, limit: int, scenario: str | None
) -> list[Strategy]:
    stmt = select(Strategy).order_by(Strategy.key).limit(limit)
    if after_key:
        stmt = stmt.where(Strategy.key > after_key)
    if scenario:
        stmt = stmt.where(Strategy.scenario == scenario)
    return list((await session.scalars(stmt)).all())


async def strategies_of(session: AsyncSession, scenario: str) -> list[Strategy]:
    rows = await session.scalars(select(Strategy).where(Strategy.scenario == scenario))
    return list(rows.all())


async def strategies_using_segment(session: AsyncSession, key: str) -> list[str]:
    rows = await session.scalars(select(Strategy.key).where(Strategy.segment == key))
    return list(rows.all())


async def experiments_using(
    session: AsyncSession, *, segment: str | None = None, strategy: str | None = None
) -> list[str]:
    """Keys of the experiments on this segment or strategy that still act on sends: drafts
    (they may start), running ones, and completed ones whose winner is rolled out."""
    acting = or_(
        Experiment.status.in_(("draft", "running")),
        and_(Experiment.status == "completed", Experiment.winner.is_not(None)),
    )
    stmt = select(Experiment.key).where(acting).order_by(Experiment.key)
    if segment is not None:
        stmt = stmt.where(Experiment.segment == segment)
    if strategy is not None:
        stmt = stmt.where(Experiment.strategy == strategy)
    return list((await session.scalars(stmt)).all())


async def campaigns_using_segment(session: AsyncSession, key: str) -> list[str]:
    """Keys of the campaigns on this segment that have not finished."""
    stmt = select(Campaign.key).where(
        Campaign.segment == key, Campaign.status.not_in(sorted(FINAL_STATUSES))
    )
    return list((await session.scalars(stmt.order_by(Campaign.key))).all())


def _profile_json(session: AsyncSession) -> SQLColumnExpression[Any]:
    """The customer's attributes with `tags` (a column of its own) merged in, as rules see
    them (strategies.attributes.profile_of does the same in Python)."""
    if dialect_name(session) == "postgresql":
        return Customer.attributes.op("||")(func.jsonb_build_object("tags", Customer.tags))
    return func.json_set(Customer.attributes, "$.tags", func.json(Customer.tags))


def matches(
    session: AsyncSession, rule: Rule, *, now: datetime | None = None
) -> ColumnElement[bool]:
    """The rule's SQL; relative dates fixed at ``now`` (default: the current time)."""
    return compile_sql(
        rule,
        attributes_column=_profile_json(session),
        columns={"locale": Customer.locale, "timezone": Customer.timezone},
        dialect=dialect_name(session),
        now=now or utcnow(),
    )


async def count_matching(session: AsyncSession, rule: Rule, *, now: datetime | None = None) -> int:
    stmt = select(func.count()).select_from(Customer).where(matches(session, rule, now=now))
    return int(await session.scalar(stmt) or 0)


async def sample_matching(
    session: AsyncSession, rule: Rule | None, limit: int, *, now: datetime | None = None
) -> list[Customer]:
    """Up to ``limit`` matching customers, drawn at random (as of ``now``)."""
    stmt = select(Customer).order_by(func.random()).limit(limit)
    if rule is not None:
        stmt = stmt.where(matches(session, rule, now=now))
    return list((await session.scalars(stmt)).all())


# Frequency caps across transactions, on PostgreSQL. A cap counts the patches committed
# before the group's read of recent patches: two groups deciding for one customer at once
# (API replicas, a campaign beside them) would each miss the other's. So a group holds the
# customers it decides for under capped strategies from before that read until it commits,
# and a concurrent one reads after it. A group of up to CAP_CUSTOMERS_EACH customers holds
# each of them, and their buckets shared, so that groups of other customers (API replicas'
# groups, campaign chunks) go at once; a larger one holds their buckets exclusively: a
# batch of 10,000 must not take a lock per customer (the lock table, shared by every session,
# has room for some max_locks_per_transaction x max_connections = 6,400 by default). One
# statement, buckets first, each kind sorted (UNION ALL runs its parts in order, unnest
# follows its array): groups wait for each other, never in a cycle. Keys are crc32s: two
# customers sharing one only wait for each other. Nothing on SQLite: a writer's transaction
# (BEGIN IMMEDIATE, app/db.py) holds the database from its first statement until it
# commits, so groups take turns there anyway.
CAP_BUCKET_LOCKS = 0x1CC0004  # namespaces of the two-key form, beside 0x1CC0002 and 0x1CC0003
CAP_CUSTOMER_LOCKS = 0x1CC0005
CAP_BUCKETS = 64
CAP_CUSTOMERS_EACH = 512  # an accept group's most (500), a campaign chunk's (500)
# buckets shared, then customers exclusively: one statement (app.db.hold_locks takes one kind)
_HOLD_EACH = text(
    "SELECT pg_advisory_xact_lock_shared(:bucket_locks, b)"
    " FROM unnest(CAST(:buckets AS int[])) AS b"
    " UNION ALL SELECT pg_advisory_xact_lock(:customer_locks, c)"
    " FROM unnest(CAST(:customers AS int[])) AS c"
)


def cap_lock_keys(customer_ids: Collection[str]) -> tuple[list[int], list[int]]:
    """The sorted keys a group deciding for these customers under caps holds: (buckets,
    customers), no customers for a group of more than CAP_CUSTOMERS_EACH."""
    buckets = sorted({lock_bucket(c, CAP_BUCKETS) for c in customer_ids})
    customers = sorted({lock_key(c) for c in customer_ids})
    return buckets, [] if len(customers) > CAP_CUSTOMERS_EACH else customers


async def hold_for_caps(session: AsyncSession, customer_ids: Collection[str]) -> None:
    """Hold the customers' frequency caps (see above) until the transaction ends. Before
    reading their recent patches, in a statement of its own: a statement's snapshot is
    taken when it starts, so the read then sees what the groups waited for committed.
    Every group takes it at the same step (after the erasure buckets, before experiment
    samples), so these locks add no cycle with the others."""
    if dialect_name(session) != "postgresql" or not customer_ids:
        return
    buckets, customers = cap_lock_keys(customer_ids)
    if not customers:
        await hold_locks(session, CAP_BUCKET_LOCKS, buckets)
        return
    params = {"bucket_locks": CAP_BUCKET_LOCKS, "buckets": buckets}
    params |= {"customer_locks": CAP_CUSTOMER_LOCKS, "customers": customers}
    await session.execute(_HOLD_EACH, params)


SEEK_CUSTOMERS = 48  # up to this many customers: one index seek each; more: one scan
# A group is padded to the next size: each pad is two subqueries SQLite runs for nothing
# (a group of 24 single sends, padded to 48, spent a quarter of its seeks' time on them).
_SEEK_SIZES = (1, 2, 4, 8, 16, 24, 32, SEEK_CUSTOMERS)
# pads the seeks' id list: no customer has it (ids have at least one character), so a pad
# finds nothing rather than repeating a customer's patches
_NO_CUSTOMER = ""


async def recent_patches(
    session: AsyncSession,
    customer_ids: Sequence[str],
    *,
    at: datetime,
    span: timedelta,
    most: int,
    latest: datetime | None = None,
) -> dict[str, list[datetime]]:
    """When each customer receives patches around ``at`` (a scheduled one: at its send
    time): the latest ``most`` within ``span`` before ``at`` and the earliest ``most`` after
    it, up to ``span`` after ``latest`` (default ``at``), the last decision time to serve (a
    cap of N needs no more than N on either side), from the partial index of patched
    messages."""
    unique = list(dict.fromkeys(customer_ids))
    found: dict[str, list[datetime]] = {}
    if not unique:
        return found
    window = {"since": at - span, "at": at, "until": (latest or at) + span}
    # Sends far later than ``at`` (a batch of reminders for different days) need the patches
    # around their own time, not only the ``most`` nearest ``at``: with caps kept, a span holds
    # at most ``most`` of a customer's patches, so this many cover up to ``until``.
    spread = ((latest or at) - at) / span if span else 0.0
    most_after = most * (math.ceil(spread) + 1)
    if len(unique) <= SEEK_CUSTOMERS:
        # a few customers (single sends): two seeks per customer, however many patches they
        # had; the statement is built once per size (ids padded with one no customer has)
        size = next(n for n in _SEEK_SIZES if n >= len(unique))
        padded = unique + [_NO_CUSTOMER] * (size - len(unique))
        params: dict[str, Any] = {f"c{i}": c for i, c in enumerate(padded)}
        # every row is a patch of its own: a batch's patches share their created_at
        params |= {"most": most, "most_after": most_after}
        if dialect_name(session) == "sqlite":
            params |= {k: _sqlite_time(v) for k, v in window.items()}
            _collect(found, await _seek_on_sqlite(session, size, params))
        else:
            _collect(found, await session.execute(_seeks(size, sqlite=False), params | window))
        return found
    if dialect_name(session) == "postgresql":
        # a batch: one statement, made once, the ids as one array (as an IN list, the 500
        # ids of a chunk, twice, were 1,000 parameters to process at every call: 5 ms)
        limits = {"most": most, "most_after": most_after}
        for start in range(0, len(unique), 5_000):
            params = window | limits | {"ids": unique[start : start + 5_000]}
            _collect(found, await session.execute(_around_array(), params))
        return found
    for start in range(0, len(unique), 500):  # a batch: one cached statement per 500
        stmt = _around_many(unique[start : start + 500], window, most, most_after)
        _collect(found, await session.execute(stmt))
    return found


def _sqlite_time(at: datetime) -> str:
    """``at`` as SQLite stores a UTCDateTime (SQLAlchemy's DATETIME text format)."""
    return as_utc(at).replace(tzinfo=None).isoformat(" ", "microseconds")


@lru_cache(maxsize=2 * len(_SEEK_SIZES))
def _seeks(size: int, sqlite: bool) -> Any:
    # The union repeats the times once per customer; on SQLite they are bound as the stored
    # text, formatted once, rather than through the DATETIME processor at every position.
    since, at, until = (
        bindparam(name, type_=String) if sqlite else bindparam(name)
        for name in ("since", "at", "until")
    )
    parts = []
    for i in range(size):
        mine = (Message.customer_id == bindparam(f"c{i}"), Message.patch.is_not(None))
        before = (reaches_at >= since, reaches_at <= at, reaches_at.desc(), "most")
        after = (reaches_at > at, reaches_at < until, reaches_at.asc(), "most_after")
        parts += [
            select(Message.customer_id, reaches_at)
            .where(*mine, low, high)
            .order_by(order)
            .limit(bindparam(limit))
            .subquery()
            .select()
            for low, high, order, limit in (before, after)
        ]
    return union_all(*parts)


@lru_cache(maxsize=len(_SEEK_SIZES))
def _sqlite_seeks(size: int) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """_seeks on SQLite compiled once per size: its text, its parameters' names in order,
    and the values of the anonymous ones (the OFFSET 0 that SQLite's LIMIT renders)."""
    compiled = _seeks(size, sqlite=True).compile(dialect=_SQLITE)
    names = tuple(compiled.positiontup or ())
    given = {f"c{i}" for i in range(size)} | {"since", "at", "until", "most", "most_after"}
    fixed = {name: compiled.binds[name].value for name in names if name not in given}
    return compiled.string, names, fixed


async def _seek_on_sqlite(
    session: AsyncSession, size: int, params: dict[str, Any]
) -> list[tuple[str, datetime]]:
    """The seeks of a group of single sends, as driver SQL: executed through the session,
    the statement has a hundred parameters to process and a cache key to build over its
    subqueries every time, which cost about as much as SQLite's seeks themselves (a fifth
    of what strategies add to a send, in profiles of the strategies benchmark)."""
    sql, names, fixed = _sqlite_seeks(size)
    values = fixed | params
    rows = (await run_sql(session, sql, tuple(values[name] for name in names))).rows
    return [(row[0], read_sqlite_utc(row[1])) for row in rows]


_SQLITE = sqlite_dialect.dialect()


def _around_many(
    customer_ids: list[str], window: dict[str, datetime], most: int, most_after: int
) -> Any:
    mine = Message.customer_id.in_(customer_ids)
    return _around(mine, window["since"], window["at"], window["until"], most, most_after)


@lru_cache(maxsize=1)
def _around_array() -> Any:
    """PostgreSQL: _around_many with the ids as one array and every value a parameter."""
    mine = Message.customer_id == any_(bindparam("ids", type_=ARRAY(String)))
    names = ("since", "at", "until", "most", "most_after")
    values: list[BindParameter[Any]] = [bindparam(name) for name in names]
    return _around(mine, *values)


def _around(mine: Any, since: Any, at: Any, until: Any, most: Any, most_after: Any) -> Any:
    """The latest ``most`` patches of each customer (``mine``) within [since, at] and the
    earliest ``most_after`` within (at, until)."""
    patched = Message.patch.is_not(None)
    before = (reaches_at >= since, reaches_at <= at, reaches_at.desc(), most)
    after = (reaches_at > at, reaches_at < until, reaches_at.asc(), most_after)
    sides = []
    for low, high, order, limit in (before, after):
        nearest = (
            func.row_number().over(partition_by=Message.customer_id, order_by=order).label("n")
        )
        columns = (Message.customer_id, reaches_at.label("at"), nearest)
        inner = select(*columns).where(mine, patched, low, high).subquery()
        sides.append(select(inner.c.customer_id, inner.c.at).where(inner.c.n <= limit))
    return union_all(*sides)


def _collect(found: dict[str, list[datetime]], rows: Any) -> None:
    for customer_id, at in rows:
        found.setdefault(customer_id, []).append(at)
