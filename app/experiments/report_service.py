"""Loading an experiment's report: the SQL counts (report_repository) through the report
document (reporting.experiment_report, i.e. abtest's report)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from abtest.counts import ArmCounts, DailyCounts
from abtest.report import Report
from app.errors import Conflict, NotFound
from app.experiments import report_repository, repository
from app.experiments.models import Experiment
from app.experiments.reporting import experiment_report


class ReportUnavailable(Conflict):
    """The stored data cannot make a consistent report (409), e.g. messages or conversions of
    customers the experiment has no assignment for."""

    name = "ReportUnavailable"


async def counts_of(
    session: AsyncSession, experiment: Experiment
) -> tuple[list[ArmCounts], list[DailyCounts]]:
    """The experiment's funnel counts and daily series; a draft has none to query."""
    if experiment.status == "draft":
        zero = [ArmCounts(k, 0, 0, 0, 0, 0) for k in report_repository.variant_keys(experiment)]
        return zero, []
    arms = await report_repository.arm_counts(session, experiment)
    return arms, await report_repository.daily_counts(session, experiment)


async def report_of(session: AsyncSession, key: str, *, now: datetime) -> Report:
    """The report of the experiment ``key``: NotFound when there is none, ReportUnavailable
    when its counts disagree (a stage counting more customers than were assigned)."""
    experiment = await repository.by_key(session, key)
    if experiment is None:
        raise NotFound(f"no experiment {key!r}; list them with GET /v1/experiments")
    arms, daily = await counts_of(session, experiment)
    try:
        return experiment_report(experiment, arms, daily, now=now)
    except ValueError as exc:
        raise ReportUnavailable(
            f"the report of experiment {key!r} cannot be computed: {exc}. Every message and "
            "conversion of the experiment must belong to a customer assigned to it; check "
            "that assignments are recorded before sending, then ask again"
        ) from exc
