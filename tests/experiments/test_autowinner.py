"""Auto-winner: abtest's recommendation decides (the report's rule), and its recording."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from abtest.counts import ArmCounts
from abtest.recommend import Recommendation
from abtest.sequential import sequential_diff
from app.experiments import autowinner, service
from app.experiments.models import Experiment
from app.settings import ExperimentSettings, Settings
from tests.conftest import Platform
from tests.experiments.report_data import T0, arm_rows, experiment, sessions, store

__all__ = ["sessions"]  # the fixture
NOW = T0 + timedelta(days=3)
# customers per arm in the configured 20/40/40 ratio, so no sample ratio mismatch
SIZES = {"holdout": 500, "sms": 1000, "wechat": 1000}
CLEAR = {"holdout": 25, "sms": 150, "wechat": 60}  # 5%, 15%, 6%
TIE = {"holdout": 25, "sms": 50, "wechat": 50}  # 5% each
MIN_SAMPLE = 500


def arms(converted: dict[str, int], sizes: dict[str, int] = SIZES) -> list[ArmCounts]:
    return [ArmCounts(k, sizes[k], sizes[k], sizes[k], 0, x) for k, x in converted.items()]


def recommended(converted: dict[str, int], sizes: dict[str, int] = SIZES) -> Recommendation:
    return autowinner.recommendation(experiment(min_sample=MIN_SAMPLE), arms(converted, sizes))


def test_a_clear_winner_is_found_with_the_sequential_numbers() -> None:
    found = recommended(CLEAR)
    assert (found.kind, found.variant) == ("winner", "sms")
    numbers: Any = found.numbers
    sms, wechat = numbers["comparisons"]
    assert (sms["significant"], wechat["significant"]) == (True, False)
    # ONE sequential formula: the decision's numbers are abtest.sequential's
    cs = sequential_diff(25, 500, 150, 1000, 0.95)
    assert cs is not None
    assert (sms["cs_low"], sms["cs_high"], sms["p_value"]) == (cs.low, cs.high, cs.p_value)
    assert numbers["adjustment"] == "holm"


def test_control_wins_when_every_treatment_is_worse() -> None:
    found = recommended({"holdout": 100, "sms": 50, "wechat": 40})
    assert (found.kind, found.variant) == ("winner", "holdout")


@pytest.mark.parametrize(
    ("converted", "sizes", "kind"),
    [
        (TIE, SIZES, "no_significant_difference"),
        ({"holdout": 0, "sms": 0, "wechat": 0}, SIZES, "no_significant_difference"),
        (CLEAR, {"holdout": 499, "sms": 998, "wechat": 998}, "not_enough_data"),
        (CLEAR, {"holdout": 1000, "sms": 1000, "wechat": 1000}, "srm"),
    ],
    ids=["tie", "no-conversions", "small-sample", "srm"],
)
def test_no_winner_without_trustworthy_evidence(
    converted: dict[str, int], sizes: dict[str, int], kind: str
) -> None:
    found = recommended(converted, sizes)
    assert (found.kind, found.variant) == (kind, None)


async def decide(
    sessions: async_sessionmaker[AsyncSession], converted: dict[str, int], **changes: Any
) -> tuple[dict[str, Any] | None, Experiment]:
    sizes = changes.pop("sizes", SIZES)
    exp = experiment(**{"auto_winner": True, "min_sample": MIN_SAMPLE, **changes})
    rows = [r for key, x in converted.items() for r in arm_rows(exp, key, sizes[key], x)]
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
    assert (recorded["by"], recorded["variant"], recorded["at"]) == ("auto", "sms", NOW.isoformat())
    assert (recorded["kind"], recorded["confidence"], recorded["min_sample"]) == (
        "winner",
        0.95,
        500,
    )
    assert "sms beats the control" in recorded["reason"]
    assert [a["successes"] for a in recorded["arms"]] == [25, 150, 60]
    assert [a["assigned"] for a in recorded["arms"]] == [500, 1000, 1000]
    sms = recorded["numbers"]["comparisons"][0]
    assert sms["cs_low"] > 0
    assert sms["p_value_adjusted"] < 0.05


@pytest.mark.parametrize(
    ("converted", "changes"),
    [
        (TIE, {}),
        (CLEAR, {"min_sample": 501}),
        (CLEAR, {"auto_winner": False}),
        (CLEAR, {"status": "stopped"}),
        (CLEAR, {"sizes": {"holdout": 1000, "sms": 1000, "wechat": 1000}}),
    ],
    ids=["tie", "small-sample", "auto-winner-off", "stopped", "srm"],
)
async def test_nothing_is_decided(
    sessions: async_sessionmaker[AsyncSession], converted: dict[str, int], changes: dict[str, Any]
) -> None:
    decision, stored = await decide(sessions, converted, **changes)
    assert decision is None
    assert (stored.winner, stored.winner_decision, stored.completed_at) == (None, None, None)
    assert stored.status == changes.get("status", "running")


async def test_the_runtime_pass_decides_running_experiments(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear = experiment("clear", auto_winner=True, min_sample=MIN_SAMPLE)
    tie = experiment("tie", auto_winner=True, min_sample=MIN_SAMPLE)
    rows = [r for k, x in CLEAR.items() for r in arm_rows(clear, k, SIZES[k], x)]
    rows += [r for k, x in TIE.items() for r in arm_rows(tie, k, SIZES[k], x)]
    await store(platform.runtime.sessionmaker, [clear, tie, *rows])
    notified: list[str] = []
    # the send-time caches hear of the committed winner at once
    monkeypatch.setattr(service, "_listeners", [lambda: notified.append("changed")])
    assert await autowinner.evaluate_running(platform.runtime) == 1
    assert notified == ["changed"]
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
