"""Automatic winners: a running experiment with ``auto_winner`` on completes as soon as the
peek-safe decision (reporting.peek_safe_winner) finds a winner with every arm at its minimum
sample. The campaign runner and the send-time patcher send everyone to ``experiment.winner``
once it is set, so recording it is all it takes.
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
from app.experiments import report_repository
from app.experiments.models import Experiment
from app.experiments.reporting import peek_safe_winner
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.experiments")


def _smallest_arm(arms: Sequence[ArmCounts]) -> int:
    return min((a.assigned for a in arms), default=0)


def _decision(
    experiment: Experiment,
    arms: Sequence[ArmCounts],
    winner: str,
    numbers: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    return {
        "by": "auto",
        "at": now.isoformat(),
        "winner": winner,
        "min_sample": experiment.min_sample,
        "arms": [
            {"variant": a.variant, "assigned": a.assigned, "successes": a.stage(experiment.metric)}
            for a in arms
        ],
        **numbers,
    }


def _open(experiment: Experiment) -> bool:
    return experiment.status == "running" and experiment.auto_winner and not experiment.winner


async def decide(
    session: AsyncSession, experiment: Experiment, now: datetime
) -> dict[str, Any] | None:
    """The auto decision ``experiment`` would take now, without recording it: None unless it
    is running with auto_winner on, every arm has at least ``min_sample`` customers and the
    peek-safe test finds a winner at its confidence. Only reads."""
    if not _open(experiment):
        return None
    arms = await report_repository.arm_counts(session, experiment)
    if not arms or _smallest_arm(arms) < experiment.min_sample:
        return None
    winner, numbers = peek_safe_winner(
        arms, experiment.control, experiment.confidence, metric=experiment.metric
    )
    return None if winner is None else _decision(experiment, arms, winner, numbers, now)


def record(experiment: Experiment, decision: dict[str, Any], now: datetime) -> None:
    """Set the decided winner with its numbers and complete the experiment."""
    experiment.winner = decision["winner"]
    experiment.winner_decision = decision
    experiment.status = "completed"
    experiment.completed_at = now
    experiment.updated_at = now
    log.info("experiment %s: %s wins (auto)", experiment.key, experiment.winner)


async def evaluate(
    session: AsyncSession, experiment: Experiment, now: datetime
) -> dict[str, Any] | None:
    """Decide ``experiment`` (see :func:`decide`) and, when a winner is found, record
    winner, winner_decision (every number used, the time, "by": "auto") and complete it.
    The decision, or None when nothing was decided. The caller commits."""
    decision = await decide(session, experiment, now)
    if decision is not None:
        record(experiment, decision, now)
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
        record(experiment, decision, now)
        await session.commit()
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
