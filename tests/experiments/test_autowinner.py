"""Auto-winner: the peek-safe decision and its recording."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from abtest.counts import ArmCounts
from abtest.stats import newcombe_diff_interval
from app.experiments import autowinner
from app.experiments.models import Experiment
from app.experiments.reporting import peek_safe_winner
from app.settings import ExperimentSettings, Settings
from tests.conftest import Platform
from tests.experiments.report_data import T0, arm_rows, experiment, sessions, store

__all__ = ["sessions"]  # the fixture
NOW = T0 + timedelta(days=3)
CLEAR = {"holdout": 50, "sms": 150, "wechat": 60}  # conversions of 1,000 customers each
TIE = {"holdout": 50, "sms": 50, "wechat": 50}


def arms(converted: dict[str, int], n: int = 1000) -> list[ArmCounts]:
    return [ArmCounts(k, n, n, n, 0, x) for k, x in converted.items()]


def test_a_clear_winner_is_found_with_its_numbers() -> None:
    winner, numbers = peek_safe_winner(arms(CLEAR), "holdout", 0.95)
    assert winner == "sms"
    sms, wechat = numbers["comparisons"]
    assert numbers["alpha_per_comparison"] == pytest.approx(0.025)
    assert (sms["verdict"], wechat["verdict"]) == ("better", None)
    # the sequence, by hand: Waudby-Smith et al. eq. 9 with rho tuned for 5,000 units
    alpha, n, variance = 0.025, 2000, 0.05 * 0.95 / 1000 + 0.15 * 0.85 / 1000
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / 5000
    half = math.sqrt(
        variance
        * n
        * 2
        * (n * rho2 + 1)
        / (n * n * rho2)
        * math.log(math.sqrt(n * rho2 + 1) / alpha)
    )
    assert (sms["ci_low"], sms["ci_high"]) == pytest.approx((0.1 - half, 0.1 + half))


def test_the_sequence_is_wider_than_a_fixed_interval() -> None:
    # the price of peeking: at the same confidence it never decides where a z interval would not
    _, numbers = peek_safe_winner(arms({"holdout": 50, "sms": 80}), "holdout", 0.95)
    fixed = newcombe_diff_interval(50, 1000, 80, 1000, 0.95)
    assert fixed is not None
    (sms,) = numbers["comparisons"]
    assert sms["ci_low"] < fixed.low
    assert sms["ci_high"] > fixed.high


def test_control_wins_when_every_treatment_is_worse() -> None:
    winner, _ = peek_safe_winner(arms({"holdout": 200, "sms": 50, "wechat": 40}), "holdout", 0.95)
    assert winner == "holdout"


@pytest.mark.parametrize(
    "converted", [TIE, {"holdout": 0, "sms": 0}, {"holdout": 50, "sms": 60}], ids=str
)
def test_no_winner_without_evidence(converted: dict[str, int]) -> None:
    winner, numbers = peek_safe_winner(arms(converted), "holdout", 0.95)
    assert winner is None
    assert all(c["verdict"] is None for c in numbers["comparisons"])


def test_empty_arms_give_defined_numbers() -> None:
    winner, numbers = peek_safe_winner(arms({"holdout": 0, "sms": 0}, n=0), "holdout", 0.95)
    assert winner is None
    assert numbers["control_rate"] is None
    assert numbers["comparisons"][0]["ci_low"] is None


async def decide(
    sessions: async_sessionmaker[AsyncSession], converted: dict[str, int], **changes: Any
) -> tuple[dict[str, Any] | None, Experiment]:
    exp = experiment(**{"auto_winner": True, "min_sample": 1000, **changes})
    rows = [r for key, x in converted.items() for r in arm_rows(exp, key, 1000, x)]
    await store(sessions, [exp, *rows])
    async with sessions() as session:
        row = await session.get(Experiment, exp.id)
        assert row is not None
        decision = await autowinner.evaluate(session, row, NOW)
        await session.commit()
    async with sessions() as session:
        stored = await session.get(Experiment, exp.id)
    assert stored is not None
    return decision, stored


async def test_a_clear_winner_is_chosen_and_recorded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    decision, stored = await decide(sessions, CLEAR)
    assert decision is not None
    assert (stored.winner, stored.status, stored.completed_at) == ("sms", "completed", NOW)
    recorded = stored.winner_decision
    assert recorded is not None
    assert (recorded["by"], recorded["winner"], recorded["at"]) == ("auto", "sms", NOW.isoformat())
    assert recorded["confidence"] == 0.95
    assert recorded["min_sample"] == 1000
    assert [a["successes"] for a in recorded["arms"]] == [50, 150, 60]
    assert recorded["comparisons"][0]["ci_low"] > 0


@pytest.mark.parametrize(
    ("converted", "changes"),
    [
        (TIE, {}),
        (CLEAR, {"min_sample": 1001}),
        (CLEAR, {"auto_winner": False}),
        (CLEAR, {"status": "stopped"}),
    ],
    ids=["tie", "small-sample", "auto-winner-off", "stopped"],
)
async def test_nothing_is_decided(
    sessions: async_sessionmaker[AsyncSession], converted: dict[str, int], changes: dict[str, Any]
) -> None:
    decision, stored = await decide(sessions, converted, **changes)
    assert decision is None
    assert (stored.winner, stored.winner_decision, stored.completed_at) == (None, None, None)
    assert stored.status == changes.get("status", "running")


async def test_the_runtime_pass_decides_running_experiments(platform: Platform) -> None:
    clear = experiment("clear", auto_winner=True, min_sample=1000)
    tie = experiment("tie", auto_winner=True, min_sample=1000)
    rows = [r for k, x in CLEAR.items() for r in arm_rows(clear, k, 1000, x)]
    rows += [r for k, x in TIE.items() for r in arm_rows(tie, k, 1000, x)]
    await store(platform.runtime.sessionmaker, [clear, tie, *rows])
    assert await autowinner.evaluate_running(platform.runtime) == 1
    async with platform.runtime.sessionmaker() as session:
        decided = await session.get(Experiment, clear.id)
        undecided = await session.get(Experiment, tie.id)
    assert decided is not None
    assert undecided is not None
    assert (decided.winner, decided.status) == ("sms", "completed")
    assert (undecided.winner, undecided.status) == (None, "running")


async def test_the_loop_survives_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def failing(runtime: Any) -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("database down")

    monkeypatch.setattr(autowinner, "evaluate_running", failing)
    runtime: Any = SimpleNamespace(
        settings=Settings(experiments=ExperimentSettings(evaluate_seconds=0.01))
    )
    task = asyncio.create_task(autowinner.evaluate_forever(runtime))
    while calls < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
