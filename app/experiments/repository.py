"""Experiment and assignment queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_name, hold_locks, insert_ignoring_conflicts, lock_key
from app.experiments.models import Assignment, Experiment


async def by_key(session: AsyncSession, key: str) -> Experiment | None:
    found: Experiment | None = await session.scalar(select(Experiment).where(Experiment.key == key))
    return found


async def by_id(session: AsyncSession, experiment_id: str) -> Experiment | None:
    return await session.get(Experiment, experiment_id)


async def record_assignments(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``{experiment_id, customer_id, variant, assigned_at}`` rows; a customer already
    assigned keeps the first record (assignment is sticky, so it names the same variant)."""
    if rows:
        statement = insert_ignoring_conflicts(session, Assignment, "experiment_id", "customer_id")
        await session.execute(statement, list(rows))


async def assignments_of(
    session: AsyncSession, experiment_id: str, customer_ids: Sequence[str]
) -> dict[str, str]:
    """customer id -> recorded variant, for those of ``customer_ids`` already assigned."""
    if not customer_ids:
        return {}
    rows = await session.execute(
        select(Assignment.customer_id, Assignment.variant).where(
            Assignment.experiment_id == experiment_id,
            Assignment.customer_id.in_(customer_ids),
        )
    )
    # Result.tuples() is deprecated (and breaks on SQLAlchemy 2.1): rows unpack as tuples
    return dict(rows.all())


async def page(
    session: AsyncSession,
    *,
    after_key: str | None,
    limit: int,
    status: str | None = None,
    kind: str | None = None,
) -> list[Experiment]:
    stmt = select(Experiment).order_by(Experiment.key).limit(limit)
    if after_key:
        stmt = stmt.where(Experiment.key > after_key)
    if status:
        stmt = stmt.where(Experiment.status == status)
    if kind:
        stmt = stmt.where(Experiment.kind == kind)
    return list((await session.scalars(stmt)).all())


async def running_of_strategy(
    session: AsyncSession, strategy: str, *, other_than: str
) -> list[str]:
    """Keys of the running experiments splitting ``strategy``'s traffic, but ``other_than``."""
    rows = await session.scalars(
        select(Experiment.key).where(
            Experiment.strategy == strategy,
            Experiment.status == "running",
            Experiment.id != other_than,
        )
    )
    return list(rows.all())


async def live_patch_experiments(session: AsyncSession) -> list[Experiment]:
    """Patch experiments that shape sends: running ones, and completed ones with a winner
    (everyone in the sample gets the winner)."""
    rows = await session.scalars(
        select(Experiment).where(
            Experiment.kind == "patch",
            or_(
                Experiment.status == "running",
                and_(Experiment.status == "completed", Experiment.winner.is_not(None)),
            ),
        )
    )
    return list(rows.all())


SAMPLE_LOCK_NAMESPACE = 0x1CC0002  # an advisory lock namespace (app.db)


def sample_lock_key(experiment_id: str) -> int:
    """The experiment's lock key, an int4; groups take theirs in this order."""
    return lock_key(experiment_id)


async def lock_sample(session: AsyncSession, experiment_id: str) -> None:
    """On PostgreSQL, hold the experiment's capped sample until this transaction ends, so
    that groups accepted at once in several processes join it one after the other (nothing
    to lock on SQLite, whose one writer serializes them anyway)."""
    if dialect_name(session) != "postgresql":
        return
    await hold_locks(session, SAMPLE_LOCK_NAMESPACE, [sample_lock_key(experiment_id)])


async def assignment_counts(session: AsyncSession, experiment_ids: Sequence[str]) -> dict[str, int]:
    """experiment id -> customers recorded so far."""
    if not experiment_ids:
        return {}
    rows = await session.execute(
        select(Assignment.experiment_id, func.count())
        .where(Assignment.experiment_id.in_(list(experiment_ids)))
        .group_by(Assignment.experiment_id)
    )
    return {experiment_id: int(count) for experiment_id, count in rows}


async def assignments_page(
    session: AsyncSession,
    experiment_id: str,
    *,
    after_customer: str | None,
    limit: int,
    variant: str | None = None,
) -> list[Assignment]:
    stmt = (
        select(Assignment)
        .where(Assignment.experiment_id == experiment_id)
        .order_by(Assignment.customer_id)
        .limit(limit)
    )
    if after_customer:
        stmt = stmt.where(Assignment.customer_id > after_customer)
    if variant:
        stmt = stmt.where(Assignment.variant == variant)
    return list((await session.scalars(stmt)).all())


async def assignment(
    session: AsyncSession, experiment_id: str, customer_id: str
) -> Assignment | None:
    return await session.get(Assignment, (experiment_id, customer_id))
