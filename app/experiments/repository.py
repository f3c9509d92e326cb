"""Experiment and assignment queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflicts
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
    # rows.all(): dict() takes a Result (it has keys()) for a mapping and fails
    return dict(rows.all())
