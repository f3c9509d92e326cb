"""SQLite statements of the worker's hot path: the claim and the read of held claims.

As pipeline_pg.py does on PostgreSQL with arrays, the ids go as ONE parameter (a JSON array
read by ``json_each``) into a FIXED statement text, run with ``exec_driver_sql``: Core's
expanding ``IN`` made a new statement text and parameter list per group size, and the
claim's rows went through the result processors one value at a time. The statements are
repository.claim_many's and _HELD's (their portable reference, kept for PostgreSQL's
fallback and tests/test_pipeline.py); the planner looks the ids up by the primary key
(``LIST SUBQUERY`` over json_each), whatever the table's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import column_processor, json_array, sqlite_select_in
from app.messages.models import Message
from app.messages.outcomes import Claimed
from app.sqlite_inline import run_sql

MESSAGES: Table = Message.__table__  # type: ignore[assignment]

_IDS = "id IN (SELECT value FROM json_each(?))"
_STATUSES = "('queued', 'retrying', 'sending', 'scheduled')"  # repository.CLAIMABLE

# `status || ''`: not on ix_messages_status_id (see repository._STATUS_BY_ID)
_CLAIM = f"""UPDATE messages
SET status = 'sending', lease_owner = ?, lease_until = ?,
    attempts = attempts + 1, channel_attempts = channel_attempts + 1, updated_at = ?
WHERE {_IDS}
  AND status || '' IN {_STATUSES}
  AND (lease_until IS NULL OR lease_until < ?)
  AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
RETURNING id, channels, channel_index, recipient, content, attempts, channel_attempts,
    customer_id, scenario, typeof(unpatched) <> 'null'
"""
# (`unpatched IS NOT NULL` answers 1 for a NULL in this RETURNING on SQLite 3.40: every
# claimed message looked patched, and its consent was read again before it went)

_HELD = (
    f"SELECT id, attempts FROM messages WHERE {_IDS} "
    "AND lease_owner = ? AND status || '' = 'sending'"
)


async def claim_many(
    session: AsyncSession, ids: Sequence[str], *, worker: str, now: str, lease_until: str
) -> list[Claimed]:
    """repository.claim_many; ``now`` and ``lease_until`` as the column stores them (the
    UTCDateTime bind processor's text)."""
    params = (worker, lease_until, now, json_array(ids), now, now)
    rows = (await run_sql(session, _CLAIM, params)).rows
    loads = orjson.loads
    return [
        Claimed(
            row[0],
            loads(row[1]),
            row[2],
            loads(row[3]),
            loads(row[4]),
            row[5],
            row[6],
            row[7],
            row[8],
            bool(row[9]),
        )
        for row in rows
    ]


async def held_claims(session: AsyncSession, ids: Sequence[str], *, worker: str) -> dict[str, int]:
    """The claim (attempt count) of each of these messages the worker still holds."""
    return {row[0]: row[1] for row in await sqlite_select_in(session, _HELD, ids, worker)}


def stored_time(session: AsyncSession, value: datetime) -> str:
    """``value`` as a UTCDateTime column stores it on SQLite."""
    process = column_processor(session.get_bind().dialect, MESSAGES, "updated_at")
    assert process is not None
    text: str = process(value)
    return text
