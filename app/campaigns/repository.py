"""All SQL of campaigns: lookups, the audience walk and the compare-and-set of progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns.models import Campaign
from app.customers.models import Customer
from app.experiments.models import Assignment
from app.messages.models import Message


async def by_key(session: AsyncSession, key: str) -> Campaign | None:
    found: Campaign | None = await session.scalar(select(Campaign).where(Campaign.key == key))
    return found


async def by_id(session: AsyncSession, campaign_id: str) -> Campaign | None:
    return await session.get(Campaign, campaign_id, populate_existing=True)


async def page(session: AsyncSession, *, after_key: str | None, limit: int) -> list[Campaign]:
    stmt = select(Campaign).order_by(Campaign.key).limit(limit)
    if after_key:
        stmt = stmt.where(Campaign.key > after_key)
    return list((await session.scalars(stmt)).all())


async def due_ids(session: AsyncSession, now: datetime) -> list[str]:
    """Running campaigns and scheduled ones whose start has come, oldest first."""
    started = (Campaign.status == "scheduled") & (
        Campaign.starts_at.is_(None) | (Campaign.starts_at <= now)
    )
    stmt = (
        select(Campaign.id)
        .where(or_(Campaign.status == "running", started))
        .order_by(Campaign.created_at)
    )
    return list((await session.scalars(stmt)).all())


async def set_status(
    session: AsyncSession, campaign_id: str, old: str, new: str, **values: Any
) -> bool:
    """Move a campaign from status ``old`` to ``new`` unless someone else moved it first."""
    stmt = (
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == old)
        .values(status=new, **values)
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount == 1)


@dataclass(frozen=True)
class Member:
    """What the runner needs of a customer of the audience."""

    id: str
    timezone: str | None


async def chunk(
    session: AsyncSession, matches: ColumnElement[bool], after: str | None, size: int
) -> list[Member]:
    """The next ``size`` customers of the segment after id ``after`` (keyset: one index
    range per chunk, however far the campaign has got)."""
    stmt = select(Customer.id, Customer.timezone).where(matches).order_by(Customer.id).limit(size)
    if after is not None:
        stmt = stmt.where(Customer.id > after)
    return [Member(id=i, timezone=tz) for i, tz in await session.execute(stmt)]


async def created_since(session: AsyncSession, owner: str, first_id: str) -> int:
    """Messages of ``owner`` with ids from ``first_id`` on: those created since the time in
    the id (a range of the (owner, id) index, however many the owner has)."""
    stmt = (
        select(func.count())
        .select_from(Message)
        .where(Message.owner == owner, Message.id >= first_id)
    )
    return int(await session.scalar(stmt) or 0)


async def assigned_count(session: AsyncSession, experiment_id: str) -> int:
    stmt = (
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.experiment_id == experiment_id)
    )
    return int(await session.scalar(stmt) or 0)


@dataclass(frozen=True)
class Advance:
    """A chunk's effect on a campaign's progress."""

    cursor: str | None
    processed: int
    sent: int
    held_out: int
    skipped: int
    error: str | None
    finished: bool
    # the backlog of messages deferred by quiet hours: (release_from, release_at) (runner)
    release: tuple[datetime | None, datetime | None] = (None, None)


async def advance(
    session: AsyncSession, campaign_id: str, old_cursor: str | None, step: Advance, now: datetime
) -> bool:
    """Move the cursor and add the counts if the campaign is still running and nobody moved
    its cursor since ``old_cursor`` was read (compare-and-set): of two runners on one chunk,
    one wins and the other rolls its chunk back; a pause or cancel stops after this chunk."""
    values: dict[str, Any] = {
        "cursor": step.cursor,
        "processed": Campaign.processed + step.processed,
        "sent": Campaign.sent + step.sent,
        "held_out": Campaign.held_out + step.held_out,
        "skipped": Campaign.skipped + step.skipped,
        "release_from": step.release[0],
        "release_at": step.release[1],
        "updated_at": now,
    }
    if step.error is not None:
        values["last_error"] = func.coalesce(Campaign.last_error, step.error)
    if step.finished:
        values |= {"status": "completed", "finished_at": now}
    stmt = (
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.cursor.is_not_distinct_from(old_cursor),
            Campaign.status == "running",
        )
        .values(**values)
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount == 1)
