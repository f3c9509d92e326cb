"""The report document and the peek-safe decision, for now computed here from the statistics
primitives (abtest/stats.py); both will be switched to abtest/report.py and
abtest/sequential.py, so each is ONE function with a stable contract:

- ``build_report(experiment, arms, daily, now=...)``: a JSON-ready dict with every number and
  the settings used (floats or None, money as decimal strings; never NaN);
- ``peek_safe_winner(arms, control, confidence, metric=...)``: the variant an automatic
  decision may pick now, or None, and the numbers behind it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from abtest.counts import STAGES, ArmCounts, DailyCounts
from abtest.stats import newcombe_diff_interval, srm_check, two_proportion_ztest, wilson_interval
from app.experiments.models import Experiment

Z_TEST = "pooled two-proportion z test, two-sided"
DIFF_INTERVAL = "Newcombe hybrid score interval of the difference"
RATE_INTERVAL = "Wilson score interval"
# GrowthBook's default: the sample size at which the confidence sequence is tightest
SEQUENTIAL_TUNING = 5000
SEQUENTIAL_METHOD = (
    "asymptotic confidence sequence for the difference of proportions "
    "(Waudby-Smith et al. 2023, as GrowthBook gbstats), Bonferroni over the comparisons"
)


def _valid(successes: int, trials: int) -> bool:
    # counts from a database can disagree (a message to a customer whose assignment is
    # missing); such a cell gets no statistics rather than an exception
    return 0 <= successes <= trials


def _stage_cell(
    arm: ArmCounts, control: ArmCounts | None, stage: str, confidence: float
) -> dict[str, Any]:
    count, trials = arm.stage(stage), arm.assigned
    cell: dict[str, Any] = {
        "count": count,
        "trials": trials,
        "rate": None,
        "ci_low": None,
        "ci_high": None,
    }
    if not _valid(count, trials):
        return {**cell, "vs_control": None}
    interval = wilson_interval(count, trials, confidence)
    if interval is not None:
        cell.update(rate=count / trials, ci_low=interval.low, ci_high=interval.high)
    cell["vs_control"] = None if control is None else _versus(arm, control, stage, confidence)
    return cell


def _versus(
    arm: ArmCounts, control: ArmCounts, stage: str, confidence: float
) -> dict[str, Any] | None:
    x1, n1, x2, n2 = control.stage(stage), control.assigned, arm.stage(stage), arm.assigned
    if not _valid(x1, n1):
        return None
    test = two_proportion_ztest(x1, n1, x2, n2)
    interval = newcombe_diff_interval(x1, n1, x2, n2, confidence)
    defined = n1 > 0 and n2 > 0
    return {
        "difference": x2 / n2 - x1 / n1 if defined else None,
        "ci_low": None if interval is None else interval.low,
        "ci_high": None if interval is None else interval.high,
        "z": test.z,
        "p_value": test.p_value,
    }


def _arm_entry(
    arm: ArmCounts, variant: dict[str, Any], control: ArmCounts | None, confidence: float
) -> dict[str, Any]:
    is_control = control is not None and control.variant == arm.variant
    versus = None if is_control else control
    return {
        "variant": arm.variant,
        "weight": variant.get("weight"),
        "holdout": bool(variant.get("holdout", False)),
        "control": is_control,
        "messages": arm.messages,
        "cost": str(arm.cost),
        "value": str(arm.value),
        "stages": {s: _stage_cell(arm, versus, s, confidence) for s in STAGES},
    }


def _settings(experiment: Experiment) -> dict[str, Any]:
    return {
        "key": experiment.key,
        "kind": experiment.kind,
        "segment": experiment.segment,
        "strategy": experiment.strategy,
        "variants": experiment.variants,
        "control": experiment.control,
        "coverage": experiment.coverage,
        "sample_size": experiment.sample_size,
        "metric": experiment.metric,
        "conversion_event": experiment.conversion_event,
        "attribution_hours": experiment.attribution_hours,
        "confidence": experiment.confidence,
        "min_sample": experiment.min_sample,
        "target_lift": experiment.target_lift,
        "auto_winner": experiment.auto_winner,
    }


def _srm(arms: Sequence[ArmCounts], experiment: Experiment) -> dict[str, Any]:
    weights = [float(v.get("weight", 0) or 0) for v in experiment.variants]
    if sum(weights) <= 0:
        return {"statistic": None, "df": None, "p_value": None, "mismatch": False}
    check = srm_check([a.assigned for a in arms], weights)
    return {**check._asdict(), "threshold": 0.001}


def _daily_series(daily: Sequence[DailyCounts]) -> list[dict[str, Any]]:
    totals: dict[str, list[int]] = {}
    series = []
    for row in daily:
        total = totals.setdefault(row.variant, [0, 0])
        total[0] += row.assigned
        total[1] += row.converted
        rate = total[1] / total[0] if total[0] and total[1] <= total[0] else None
        series.append(
            {
                "day": row.day.isoformat(),
                "variant": row.variant,
                "assigned": row.assigned,
                "converted": row.converted,
                "cumulative_assigned": total[0],
                "cumulative_converted": total[1],
                "cumulative_rate": rate,
            }
        )
    return series


def build_report(
    experiment: Experiment,
    arms: Sequence[ArmCounts],
    daily: Sequence[DailyCounts],
    *,
    now: datetime,
) -> dict[str, Any]:
    """The experiment's report: settings, per-variant funnel with Wilson intervals, each
    stage against the control (difference, Newcombe interval, z test), SRM, the peek-safe
    sequential result on the primary metric, the daily series, and the recorded winner."""
    confidence = experiment.confidence
    by_key = {a.variant: a for a in arms}
    control = by_key.get(experiment.control)
    configured = {str(v["key"]): v for v in experiment.variants}
    winner, sequential = peek_safe_winner(
        arms, experiment.control, confidence, metric=experiment.metric
    )
    return {
        "experiment": experiment.key,
        "status": experiment.status,
        "generated_at": now.isoformat(),
        "started_at": None if experiment.started_at is None else experiment.started_at.isoformat(),
        "settings": _settings(experiment),
        "methods": {
            "rate_interval": RATE_INTERVAL,
            "difference_interval": DIFF_INTERVAL,
            "test": Z_TEST,
        },
        "arms": [_arm_entry(a, configured.get(a.variant, {}), control, confidence) for a in arms],
        "srm": _srm(arms, experiment),
        "sequential": {**sequential, "winner": winner},
        "daily": _daily_series(daily),
        "winner": experiment.winner,
        "winner_decision": experiment.winner_decision,
    }


def _sequence_halfwidth(variance: float, n: int, alpha: float, tuning: int) -> float:
    """Half-width of the asymptotic confidence sequence (Waudby-Smith et al. 2023, eq. 9)
    for an estimate with ``variance`` from ``n`` units: with s^2 = variance * n,
    sqrt(s^2 * 2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha)), where rho
    makes the sequence tightest at ``tuning`` units."""
    log_alpha = -2.0 * math.log(alpha)
    rho = math.sqrt((log_alpha + math.log(log_alpha + 1.0)) / tuning)
    s2 = variance * n
    n_rho2 = n * rho * rho
    return math.sqrt(
        s2 * 2.0 * (n_rho2 + 1.0) / (n_rho2 * n) * math.log(math.sqrt(n_rho2 + 1.0) / alpha)
    )


def _sequence_comparison(
    arm: ArmCounts, control: ArmCounts, metric: str, alpha: float, tuning: int
) -> dict[str, Any]:
    x1, n1, x2, n2 = control.stage(metric), control.assigned, arm.stage(metric), arm.assigned
    entry: dict[str, Any] = {"variant": arm.variant, "successes": x2, "trials": n2}
    entry.update(rate=None, difference=None, ci_low=None, ci_high=None, verdict=None)
    if not (n1 > 0 and n2 > 0 and _valid(x1, n1) and _valid(x2, n2)):
        return entry
    p1, p2 = x1 / n1, x2 / n2
    variance = p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2
    entry.update(rate=p2, difference=p2 - p1)
    if variance <= 0.0:  # both arms all failures (or all successes): nothing to tell apart
        return entry
    half = _sequence_halfwidth(variance, n1 + n2, alpha, tuning)
    low, high = p2 - p1 - half, p2 - p1 + half
    verdict = "better" if low > 0.0 else "worse" if high < 0.0 else None
    entry.update(ci_low=low, ci_high=high, verdict=verdict)
    return entry


def peek_safe_winner(
    arms: Sequence[ArmCounts],
    control: str,
    confidence: float,
    *,
    metric: str = "converted",
    tuning: int = SEQUENTIAL_TUNING,
) -> tuple[str | None, dict[str, Any]]:
    """The variant an automatic decision may pick at any look, and the numbers behind it.

    Each treatment's rate of ``metric`` (customers reaching the stage / assigned) is compared
    with the control's through an asymptotic confidence sequence for the difference, at
    ``confidence`` split over the comparisons (Bonferroni): it stays valid however often it is
    looked at. The winner is the best-rated treatment whose sequence lies above 0; the control
    when every treatment's lies below 0; otherwise None (keep collecting)."""
    by_key = {a.variant: a for a in arms}
    treatments = [a for a in arms if a.variant != control]
    alpha = (1.0 - confidence) / max(1, len(treatments))
    numbers: dict[str, Any] = {"method": SEQUENTIAL_METHOD, "metric": metric, "tuning": tuning}
    numbers.update(confidence=confidence, alpha_per_comparison=alpha, control=control)
    base = by_key.get(control)
    if base is None or not treatments:
        return None, {**numbers, "control_rate": None, "comparisons": []}
    numbers["control_rate"] = base.stage(metric) / base.assigned if base.assigned else None
    comparisons = [_sequence_comparison(a, base, metric, alpha, tuning) for a in treatments]
    numbers["comparisons"] = comparisons
    better = [c for c in comparisons if c["verdict"] == "better"]
    if better:
        return max(better, key=lambda c: c["rate"])["variant"], numbers
    if all(c["verdict"] == "worse" for c in comparisons):
        return control, numbers
    return None, numbers
