"""Automatic winners: a running experiment with ``auto_winner`` on completes as soon as abtest's
recommendation (abtest/recommend.py, the same the report shows) is "winner": no sample ratio
mismatch, every arm at the experiment's ``min_sample``, and the peek-safe confidence sequence
(abtest/sequential.py) of a variant against the control excluding 0 at its confidence (Holm
across variants). The campaign runner and the send-time patcher send everyone to
``experiment.winner`` once it is set; ``service.changed`` drops this process's cache at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from abtest.counts import ArmCounts
from abtest.recommend import Recommendation, recommend
from app.db import commit
from app.experiments import report_repository, service
from app.experiments.models import Experiment
from app.experiments.reporting import report_settings
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.experiments")


def recommendation(experiment: Experiment, arms: Sequence[ArmCounts]) -> Recommendation:
    """abtest's recommendation for ``arms`` under the experiment's settings (as the report's).
    Raises ValueError on inconsistent counts or settings."""
    settings = report_settings(experiment)
    weights = {v.key: v.weight for v in settings.variants}
    return recommend(arms, weights, settings.rule())


def _decision(
    experiment: Experiment, arms: Sequence[ArmCounts], found: Recommendation, now: datetime
) -> dict[str, Any]:
    return {
        **found.as_dict(),
        "by": "auto",
        "at": now.isoformat(),
        "confidence": experiment.confidence,
        "min_sample": experiment.min_sample,
        "arms": [
            {"variant": a.variant, "assigned": a.assigned, "successes": a.stage(experiment.metric)}
            for a in arms
        ],
    }


def _open(experiment: Experiment) -> bool:
    return experiment.status == "running" and experiment.auto_winner and not experiment.winner


async def decide(
    session: AsyncSession, experiment: Experiment, now: datetime
) -> dict[str, Any] | None:
    """The auto decision ``experiment`` would take now, without recording it: None unless it
    is running with auto_winner on and abtest recommends a winner (see the module docstring).
    Inconsistent counts decide nothing (logged). Only reads."""
    if not _open(experiment):
        return None
    arms = await report_repository.arm_counts(session, experiment)
    try:
        found = recommendation(experiment, arms)
    except ValueError as exc:
        log.warning("experiment %s: not decided, inconsistent counts: %s", experiment.key, exc)
        return None
    if found.kind != "winner" or found.variant is None:
        return None
    return _decision(experiment, arms, found, now)


def record(
    session: AsyncSession, experiment: Experiment, decision: dict[str, Any], now: datetime
) -> None:
    """Set the decided winner with its numbers and complete the experiment; once ``session``
    commits through ``app.db.commit``, ``service.changed`` tells the send-time caches."""
    experiment.winner = decision["variant"]
    experiment.winner_decision = decision
    experiment.status = "completed"
    experiment.completed_at = now
    experiment.updated_at = now
    service.changed_on_commit(session)
    log.info("experiment %s: %s wins (auto)", experiment.key, experiment.winner)


async def evaluate(
    session: AsyncSession, experiment: Experiment, now: datetime
) -> dict[str, Any] | None:
    """Decide ``experiment`` (see :func:`decide`) and, when a winner is found, record
    winner, winner_decision (the recommendation's numbers, the time, "by": "auto") and
    complete it. The decision, or None when nothing was decided. The caller commits (with
    ``app.db.commit``, so the caches hear of it)."""
    decision = await decide(session, experiment, now)
    if decision is not None:
        record(session, experiment, decision, now)
    return decision


async def evaluate_running(runtime: Runtime) -> int:
    """One pass over the running experiments with auto_winner on, each in its own
    transaction (one failing is logged and does not hold back the others); how many were
    decided."""
    async with runtime.read_sessionmaker() as session:
        ids = list(
            await session.scalars(
                select(Experiment.id).where(
                    Experiment.status == "running", Experiment.auto_winner.is_(True)
                )
            )
        )
    decided = 0
    for experiment_id in ids:
        try:
            decided += await _evaluate_one(runtime, experiment_id)
        except Exception:
            log.exception("evaluating experiment %s failed", experiment_id)
    return decided


async def _evaluate_one(runtime: Runtime, experiment_id: str) -> int:
    now = utcnow()
    # The counting reads in a read session: on SQLite the writer's lock is not held while
    # the experiment's messages are aggregated.
    async with runtime.read_sessionmaker() as session:
        experiment = await session.get(Experiment, experiment_id)
        decision = None if experiment is None else await decide(session, experiment, now)
    if decision is None:
        return 0
    async with runtime.sessionmaker() as session:
        # the row locked on PostgreSQL, and checked again: two workers never decide it twice,
        # and a stop or a manual winner meanwhile wins
        experiment = await session.scalar(
            select(Experiment).where(Experiment.id == experiment_id).with_for_update()
        )
        if experiment is None or not _open(experiment):
            return 0
        record(session, experiment, decision, now)
        await commit(session)
    return 1


async def evaluate_forever(runtime: Runtime) -> None:
    """Evaluate auto-winner experiments every ``experiments.evaluate_seconds``; errors are
    logged and never end the loop."""
    interval = runtime.settings.experiments.evaluate_seconds
    while True:
        # sleep first: processes starting together do not all evaluate at once
        await asyncio.sleep(interval)
        try:
            await evaluate_running(runtime)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("auto-winner evaluation failed")
