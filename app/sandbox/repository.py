from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, String, Table, Text, any_, bindparam, cast, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import sqlite_rows
from app.db import dialect_name, insert_ignoring_conflicts, sqlite_select_in
from app.messages.models import Message
from app.sandbox.models import SandboxDelivery
from app.timeutil import utcnow

SANDBOX: Table = SandboxDelivery.__table__  # type: ignore[assignment]


async def record_sent(session: AsyncSession, deliveries: Sequence[dict[str, Any]]) -> None:
    """Write sends, each with the id its message names (channels/sandbox.py: in the
    transaction of their outcomes), except those of messages erased meanwhile. A key
    recorded already (by a version that wrote sends apart from their outcomes, for a send
    whose outcome was never written) is replaced: a key's row is the send its message
    names."""
    erased = await _erased(session, [d["message_id"] for d in deliveries])
    now = utcnow()
    rows = [{**d, "created_at": now} for d in deliveries if d["message_id"] not in erased]
    if not rows:
        return
    if sqlite_rows.applies(session, rows):
        written = await sqlite_rows.insert(session, SANDBOX, rows, ignoring=("idempotency_key",))
    else:
        # executemany: compiled once and cached (a multi-row VALUES is compiled per group size)
        written = len((await session.execute(_recording(dialect_name(session)), rows)).all())
    if written < len(rows):
        await _replace_earlier(session, rows)


async def _erased(session: AsyncSession, message_ids: list[str]) -> set[str]:
    """Those of the messages whose customer was erased meanwhile (the send went while it
    was, app/customers/erasure.py): the sandbox keeps no copy of them. Erasure empties a
    message's content; an accepted message always has some."""
    if dialect_name(session) == "sqlite":  # the ids as one parameter, one fixed statement
        found: Any = await sqlite_select_in(session, _ERASED_SQLITE, message_ids)
    else:
        found = await session.execute(_ERASED, {"ids": message_ids})
    return {row[0] for row in found}


_ERASED_SQLITE = (
    "SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?)) AND content = '{}'"
)
_ERASED = select(Message.id).where(
    Message.id == any_(bindparam("ids", type_=ARRAY(String))),
    cast(Message.content, Text) == "{}",
)


async def _replace_earlier(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    by_key = {row["idempotency_key"]: row for row in rows}
    stored = await session.execute(
        select(SANDBOX.c.idempotency_key, SANDBOX.c.id).where(
            SANDBOX.c.idempotency_key.in_(list(by_key))
        )
    )
    for key, delivery_id in stored.all():
        row = by_key[key]
        if delivery_id != row["id"]:
            values = {k: v for k, v in row.items() if k != "idempotency_key"}
            await session.execute(
                update(SANDBOX).where(SANDBOX.c.idempotency_key == key).values(**values)
            )


@functools.cache
def _recording(dialect: str) -> Any:
    """record_sent's statement, made once per database kind (not at every group)."""
    return insert_ignoring_conflicts(dialect, SANDBOX, "idempotency_key").returning(
        SANDBOX.c.idempotency_key
    )


async def list_deliveries(
    session: AsyncSession,
    *,
    channel: str | None,
    message_id: str | None,
    before_id: str | None,
    since: datetime | None,
    limit: int,
) -> list[SandboxDelivery]:
    stmt = select(SandboxDelivery).order_by(SandboxDelivery.id.desc()).limit(limit)
    if channel:
        stmt = stmt.where(SandboxDelivery.channel == channel)
    if message_id:
        stmt = stmt.where(SandboxDelivery.message_id == message_id)
    if before_id:
        stmt = stmt.where(SandboxDelivery.id < before_id)
    if since:
        stmt = stmt.where(SandboxDelivery.created_at >= since)
    return list((await session.scalars(stmt)).all())


async def erase_for_customer(session: AsyncSession, customer_id: str) -> None:
    """Delete the sandbox's copies of a customer's messages (erasure of the customer)."""
    mine = select(Message.id).where(Message.customer_id == customer_id)
    await session.execute(delete(SANDBOX).where(SANDBOX.c.message_id.in_(mine)))
