"""Loading an experiment's report: the SQL counts (report_repository) through the report
document (reporting.build_report)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from abtest.counts import ArmCounts, DailyCounts
from app.errors import NotFound
from app.experiments import report_repository, repository
from app.experiments.models import Experiment
from app.experiments.reporting import build_report


async def counts_of(
    session: AsyncSession, experiment: Experiment
) -> tuple[list[ArmCounts], list[DailyCounts]]:
    """The experiment's funnel counts and daily series; a draft has none to query."""
    if experiment.status == "draft":
        zero = [ArmCounts(k, 0, 0, 0, 0, 0) for k in report_repository.variant_keys(experiment)]
        return zero, []
    arms = await report_repository.arm_counts(session, experiment)
    return arms, await report_repository.daily_counts(session, experiment)


async def report_of(session: AsyncSession, key: str, *, now: datetime) -> dict[str, Any]:
    """The report of the experiment ``key``; NotFound when there is none."""
    experiment = await repository.by_key(session, key)
    if experiment is None:
        raise NotFound(f"no experiment {key!r}; list them with GET /v1/experiments")
    arms, daily = await counts_of(session, experiment)
    return build_report(experiment, arms, daily, now=now)
