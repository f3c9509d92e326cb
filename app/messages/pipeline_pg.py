"""PostgreSQL statements of the worker's hot path: the claim and the record of outcomes.

They run on the asyncpg connection under the session, inside its transaction (they commit or
roll back with it), with FIXED SQL texts and one array parameter per column instead of
expanding ``IN (...)`` lists and executemany: asyncpg's statement cache prepares each text
once per connection, and whole columns go to its binary encoder. (Through SQLAlchemy, each
new list length was a new statement to compile and prepare, and every row of an
executemany went through the bind processing one by one.)

Values still go through the columns' own SQLAlchemy bind processors (UTC datetimes, Money,
JSON by the engine's serializer), so the rows stored are exactly those the portable
statements of repository.py store; those remain the SQLite path and the fallback for what
these statements cannot express.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import bound_column, column_processor
from app.messages.models import Message, MessageEvent, Outbox
from app.messages.outcomes import Claimed, Outcome

MESSAGES: Table = Message.__table__  # type: ignore[assignment]
EVENTS: Table = MessageEvent.__table__  # type: ignore[assignment]
OUTBOX: Table = Outbox.__table__  # type: ignore[assignment]

# Both statements run with sequential scans off (planned_by_keys). asyncpg prepares each
# once per connection, and from its sixth run PostgreSQL may keep a generic plan for it (as it
# did for the foreign-key check of each event inserted, before migration 0019). Planned
# while the tables were nearly empty (a new database, or statistics from before a burst),
# those plans scan messages and outbox, and stay as the tables grow until they are analyzed:
# 0.3-0.6 s a statement for 32 messages instead of 2-3 ms. With scans off, and the joins written
# `= ANY(ARRAY[key])` (not an equality: no merge join to read a whole index in order for),
# one lookup by primary key per element of the arrays is the only plan left, whatever the
# tables' size and statistics.
_BY_KEYS = "SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)"
_RESTORE = "SELECT set_config('enable_seqscan', $1, true)"

_CLAIM = """
WITH claimed AS (
    UPDATE messages
    SET status = 'sending', lease_owner = $2, lease_until = $3,
        attempts = attempts + 1, channel_attempts = channel_attempts + 1, updated_at = $4
    WHERE id = ANY($1::text[])
      AND status || '' = ANY($5::text[])  -- by id, never on ix_messages_status_id
      AND (lease_until IS NULL OR lease_until < $4)
      AND (next_attempt_at IS NULL OR next_attempt_at <= $4)
    RETURNING id, channels, channel_index, recipient, content, attempts, channel_attempts,
        customer_id, scenario, unpatched IS NOT NULL
), sending AS (
    -- outcomes.sending_event, written here: no round trip and no arrays to encode for it
    INSERT INTO message_events (message_id, type, at, detail)
    SELECT id, 'sending', $4,
           jsonb_build_object('channel', channels -> channel_index, 'attempt', attempts)
    FROM claimed
)
SELECT * FROM claimed
"""

# The columns an outcome may change (app/messages/outcomes.py) and their arrays' types.
# Each row carries a bit mask of the columns its outcome changes: the others keep their
# value, as they do in the portable path's one UPDATE per shape of change.
CHANGEABLE: tuple[tuple[str, str], ...] = (
    ("status", "text"),
    ("status_reason", "text"),
    ("channel", "text"),
    ("channel_index", "int4"),
    ("channel_attempts", "int4"),
    ("provider", "text"),
    ("provider_message_id", "text"),
    ("cost", "numeric"),
    ("sent_at", "timestamptz"),
    ("delivered_at", "timestamptz"),
    ("next_attempt_at", "timestamptz"),
    ("lease_until", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_BITS = {name: 1 << i for i, (name, _) in enumerate(CHANGEABLE)}
_EVENT_FIELDS = ("message_id", "type", "at", "detail")
_EVENT_KEYS = frozenset(_EVENT_FIELDS)


def _events_select(first: int) -> str:
    """Events from four arrays (parameters ``first``.. ``first + 3``) of the messages the
    CTE ``changed`` holds, in array order: the ids of message_events follow it, as with
    executemany."""
    a, b, c, d = (f"${first + i}" for i in range(4))
    return (
        "INSERT INTO message_events (message_id, type, at, detail)\n"
        "SELECT message_id, type, at, detail::jsonb\n"
        f"FROM unnest({a}::text[], {b}::text[], {c}::timestamptz[], {d}::text[])\n"
        "    WITH ORDINALITY AS e(message_id, type, at, detail, n)\n"
        "WHERE message_id IN (SELECT id FROM changed)\n"
        "ORDER BY n"
    )


def _outcomes_sql() -> str:
    """One statement for a group of outcomes, fenced by the claims: the changes of the
    messages this worker still holds at the claim's attempt (the UPDATE's WHERE, which
    PostgreSQL re-checks on the newest row version if another transaction changed it
    meanwhile), and for exactly those, the events, the outbox rows of finished messages
    deleted and those of retried ones due again. It answers the held ids. (The four touch
    different rows, as a data-modifying WITH requires: every message at most once.)"""
    values = len(CHANGEABLE)
    arrays = ", ".join(f"${i + 3}::{kind}[]" for i, (_, kind) in enumerate(CHANGEABLE))
    names = ", ".join(name for name, _ in CHANGEABLE)
    assignments = ",\n        ".join(
        f"{name} = CASE WHEN (v.changed & {_BITS[name]}) = 0 THEN m.{name} ELSE v.{name} END"
        for name, _ in CHANGEABLE
    )
    events, finished, again = values + 3, values + 7, values + 8
    claims, worker = values + 10, values + 11
    return f"""
WITH changed AS (
    UPDATE messages AS m SET
        {assignments}
    FROM unnest($1::text[], ${claims}::int4[], $2::int4[], {arrays})
        AS v(id, claim, changed, {names})
    WHERE m.id = ANY(ARRAY[v.id])  -- by key, whatever the statistics (_BY_KEYS)
      AND m.lease_owner = ${worker} AND m.attempts = v.claim
      -- not on ix_messages_status_id: every message ever sent left a dead entry under
      -- 'sending' there until vacuum, and a scan of them grew with the table
      AND m.status || '' = 'sending'
    RETURNING m.id
), added AS (
{_events_select(events)}
), finished AS (
    -- from the held messages by the primary key (planned on the array alone, it was a
    -- scan of the outbox, i.e. of the backlog)
    DELETE FROM outbox AS o USING changed AS c
    WHERE o.message_id = ANY(ARRAY[c.id]) AND c.id = ANY(${finished}::text[])
), again AS (
    UPDATE outbox AS o SET due_at = a.due_at, enqueued_at = a.due_at
    FROM unnest(${again}::text[], ${again + 1}::timestamptz[]) AS a(message_id, due_at)
    WHERE o.message_id = ANY(ARRAY[a.message_id])
      AND a.message_id IN (SELECT id FROM changed)
)
SELECT id FROM changed
"""


_OUTCOMES = _outcomes_sql()


async def claim_for_sending(
    session: AsyncSession,
    ids: Sequence[str],
    *,
    statuses: Sequence[str],
    worker: str,
    now: datetime,
    lease_until: datetime,
) -> list[Claimed]:
    """repository.claim_for_sending in one statement, with the ids as one array: the
    claim's UPDATE ... RETURNING and the claimed messages' `sending` events."""
    times = _bound(session.get_bind().dialect, MESSAGES, "updated_at", [lease_until, now])
    async with planned_by_keys(session) as driver:
        rows = await driver.fetch(_CLAIM, list(ids), worker, *times, list(statuses))
    return [Claimed(*row) for row in rows]


def can_add_events(events: Sequence[dict[str, Any]]) -> bool:
    """Whether the events are plain (message_id, type, at, detail) rows."""
    return all(e.keys() == _EVENT_KEYS for e in events)


async def write_held_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], *, worker: str
) -> set[str] | None:
    """Write the outcomes of the messages this worker still holds at their claim's attempt,
    in one statement, and return those messages' ids (repository.apply_outcomes without
    the locking read before it); None (nothing written) when they cannot be written this
    way: a message twice, a column outside CHANGEABLE, an event of other fields."""
    events = [e for o in outcomes for e in o.events]  # in the given order: their ids follow it
    # The messages are locked in the order of the arrays (a nested loop over them, by the
    # primary key: the only plan, see _BY_KEYS): in id order, as receipts lock them
    # (callbacks.repository), so that the two cannot deadlock and abort a group of sends
    # whose outcome would then be lost.
    outcomes = sorted(outcomes, key=lambda o: o.message_id)
    masks = _masks(outcomes)
    if masks is None or not can_add_events(events):
        return None
    dialect = session.get_bind().dialect
    changed = functools.reduce(operator.or_, masks, 0)
    # A column no outcome of the group changes goes as an empty array: unnest pads it with
    # NULLs, which its zero bits ignore (encoding whole arrays of NULLs cost the worker).
    changes = [
        _bound(dialect, MESSAGES, name, [o.values.get(name) for o in outcomes])
        if changed & _BITS[name]
        else []
        for name, _ in CHANGEABLE
    ]
    again = [o for o in outcomes if not o.finished and o.due_at is not None]
    async with planned_by_keys(session) as driver:
        rows = await driver.fetch(
            _OUTCOMES,
            [o.message_id for o in outcomes],
            masks,
            *changes,
            *_event_columns(dialect, events),
            [o.message_id for o in outcomes if o.finished],
            [o.message_id for o in again],
            _bound(dialect, OUTBOX, "due_at", [o.due_at for o in again]),
            [o.claim for o in outcomes],
            worker,
        )
    return {row[0] for row in rows}


@contextlib.asynccontextmanager
async def planned_by_keys(session: AsyncSession) -> AsyncIterator[Any]:
    """The asyncpg connection under the session, inside its transaction, with sequential
    scans off in the block (_BY_KEYS). When the block began the transaction they stay off
    until its end (the worker commits right after: no round trip to restore them)."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    began = not driver.is_in_transaction()
    # when it begins the transaction, it replaces the SELECT 1 that would open it (as in
    # bulk_pg.driver_connection): no round trip added
    previous = (await connection.exec_driver_sql(_BY_KEYS)).one()
    yield driver
    if not began:
        await driver.execute(_RESTORE, previous[0])


def _masks(outcomes: Sequence[Outcome]) -> list[int] | None:
    """Each outcome's bit mask of changed columns; None if one cannot be expressed."""
    if len({o.message_id for o in outcomes}) != len(outcomes):
        return None
    masks = []
    for o in outcomes:
        mask = 0
        for name in o.values:
            bit = _BITS.get(name)
            if bit is None:
                return None
            mask |= bit
        masks.append(mask)
    return masks


def _event_columns(dialect: Dialect, events: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [_bound(dialect, EVENTS, name, [e[name] for e in events]) for name in _EVENT_FIELDS]


def _bound(dialect: Dialect, table: Table, column: str, values: list[Any]) -> list[Any]:
    """``values`` as SQLAlchemy binds them for the column (None stays None for the nullable
    columns; a JSON column's None would become 'null', as SQLAlchemy makes it)."""
    return bound_column(column_processor(dialect, table, column), values)
