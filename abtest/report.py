"""The experiment report: every number an analyst needs, as a plain JSON-ready dict.

``build_report(settings, arms, daily)`` is pure: the counts come from the SQL aggregation
(app/experiments/report_repository.py), the settings from the experiment. The document holds
only str, int, float (always finite), bool, None, lists and dicts; money is a decimal string
(DESIGN.md API conventions). Every rate is over the arm's assigned customers (the unit of
randomisation), so arms compare on the same denominator whatever happened downstream.

Each method is named in the document next to its numbers (see ``METHODS``). The CSV export is
abtest.report_csv, the HTML page abtest.report_page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from abtest.bayes import bayes_compare
from abtest.costs import arm_costs
from abtest.counts import STAGES, ArmCounts, DailyCounts
from abtest.power import sample_still_needed
from abtest.recommend import SRM_THRESHOLD, DecisionRule, recommend
from abtest.sequential import DEFAULT_TUNING, sequential_diff, sequential_lift
from abtest.stats import (
    chi_square_arms,
    holm,
    newcombe_diff_interval,
    relative_lift,
    srm_check,
    two_proportion_ztest,
    wilson_interval,
)

Report = dict[str, Any]
REPORT_VERSION = 1
COMPARED_STAGES = STAGES[1:]  # "assigned" is the denominator, not an outcome
METHODS = {
    "rate_interval": "wilson_score",
    "difference_interval": "newcombe_hybrid_score",
    "relative_lift_interval": "delta_method",
    "test": "two_proportion_pooled_z_test",
    "multiple_comparisons": "holm",
    "chi_square": "pearson_chi_square_2xk_no_continuity_correction",
    "srm": "pearson_chi_square_goodness_of_fit",
    "bayes": "beta_binomial_uniform_prior",
    "sequential": "asymptotic_confidence_sequence_waudby_smith_2023",
    "power": "pooled_z_test_sample_size",
    "decision_rule": (
        "winner when the peek-safe confidence sequence of a variant against the control excludes "
        "0, i.e. its always-valid p-value is below alpha (Holm-adjusted beyond two arms), after "
        "a sample ratio check and the minimum sample per arm"
    ),
}


@dataclass(frozen=True, slots=True)
class VariantSettings:
    """One arm as configured: its key, weight and what it sends (None for a holdout)."""

    key: str
    weight: float
    channel: str | None = None
    template: str | None = None
    format: str | None = None


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """The experiment's settings a report is computed with (and reports back)."""

    experiment_key: str
    control: str
    variants: tuple[VariantSettings, ...]
    metric: str = "converted"
    confidence: float = 0.95
    min_sample: int = 100
    target_lift: float = 0.1
    attribution_hours: int = 72
    power: float = 0.8
    sequential_tuning: float = DEFAULT_TUNING

    def __post_init__(self) -> None:
        keys = [v.key for v in self.variants]
        if len(set(keys)) != len(keys) or self.control not in keys:
            raise ValueError("variant keys must be unique and include the control")
        if self.metric not in COMPARED_STAGES:
            raise ValueError(f"metric must be one of {', '.join(COMPARED_STAGES)}")
        weights = [v.weight for v in self.variants]
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        if not (0 < self.confidence < 1 and 0 < self.power < 1):
            raise ValueError("confidence and power must lie strictly between 0 and 1")
        if self.min_sample < 0 or self.target_lift <= -1 or self.sequential_tuning <= 0:
            raise ValueError("need min_sample >= 0, target_lift > -1, sequential_tuning > 0")

    def rule(self) -> DecisionRule:
        """The recommendation's decision rule from these settings."""
        return DecisionRule(
            control=self.control,
            metric=self.metric,
            confidence=self.confidence,
            min_sample=self.min_sample,
            target_lift=self.target_lift,
            power=self.power,
            tuning=self.sequential_tuning,
        )

    def as_dict(self) -> Report:
        """The settings as a JSON-ready dict."""
        result = asdict(self)
        result["variants"] = [asdict(v) for v in self.variants]
        return result


def build_report(
    settings: ReportSettings, arms: Sequence[ArmCounts], daily: Sequence[DailyCounts]
) -> Report:
    """The whole report. Arms configured but absent from ``arms`` count as empty; arms present
    but not configured are reported (with weight 0, which the SRM check flags).
    Raises ValueError on inconsistent counts (a stage above the assigned customers)."""
    ordered = _ordered_arms(settings, arms)
    for arm in ordered:
        _check_arm(arm)
    control = next(a for a in ordered if a.variant == settings.control)
    weights = _weights(settings, ordered)
    recommendation = recommend(ordered, weights, settings.rule())
    return {
        "version": REPORT_VERSION,
        "experiment": settings.experiment_key,
        "settings": settings.as_dict(),
        "methods": dict(METHODS),
        "variants": [_variant(settings, arm, control, weights) for arm in ordered],
        "comparisons": _comparisons(settings, control, ordered),
        "chi_square": {stage: _chi_square(ordered, stage) for stage in COMPARED_STAGES},
        "srm": _srm(ordered, weights),
        "power": _power(settings, control, ordered),
        "timeline": _timeline(settings, ordered, daily),
        "recommendation": recommendation.as_dict(),
    }


def _ordered_arms(settings: ReportSettings, arms: Sequence[ArmCounts]) -> list[ArmCounts]:
    by_key = {a.variant: a for a in arms}
    configured = [by_key.get(v.key, ArmCounts(v.key, 0, 0, 0, 0, 0)) for v in settings.variants]
    known = {v.key for v in settings.variants}
    return configured + [a for a in arms if a.variant not in known]


def _check_arm(arm: ArmCounts) -> None:
    counts = [arm.stage(s) for s in STAGES]
    if min(counts) < 0 or max(counts) > arm.assigned or arm.messages < 0:
        raise ValueError(
            f"inconsistent counts for variant {arm.variant!r}: every stage counts distinct "
            f"assigned customers, so 0 <= stage <= assigned ({counts})"
        )


def _weights(settings: ReportSettings, arms: list[ArmCounts]) -> dict[str, float]:
    configured = {v.key: v.weight for v in settings.variants}
    return {a.variant: configured.get(a.variant, 0.0) for a in arms}


def _rate(count: int, trials: int) -> float | None:
    return count / trials if trials else None


def _stage(arm: ArmCounts, stage: str, confidence: float) -> Report:
    count = arm.stage(stage)
    ci = wilson_interval(count, arm.assigned, confidence)
    return {
        "stage": stage,
        "count": count,
        "rate": _rate(count, arm.assigned),
        "ci_low": None if ci is None else ci.low,
        "ci_high": None if ci is None else ci.high,
    }


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _variant(
    settings: ReportSettings, arm: ArmCounts, control: ArmCounts, weights: dict[str, float]
) -> Report:
    spec = next((v for v in settings.variants if v.key == arm.variant), None)
    is_control = arm.variant == settings.control
    costs = arm_costs(arm, None if is_control else control)
    return {
        "key": arm.variant,
        "is_control": is_control,
        "configured": spec is not None,
        "weight": weights[arm.variant],
        "channel": None if spec is None else spec.channel,
        "template": None if spec is None else spec.template,
        "format": None if spec is None else spec.format,
        "messages": arm.messages,
        "stages": [_stage(arm, s, settings.confidence) for s in STAGES],
        "value": str(arm.value),
        "costs": {
            "total": _money(costs.total),
            "per_message": _money(costs.per_message),
            "per_sent": _money(costs.per_sent),
            "per_delivered": _money(costs.per_delivered),
            "per_conversion": _money(costs.per_conversion),
            "incremental_conversions": costs.incremental_conversions,
            "per_incremental_conversion": _money(costs.per_incremental_conversion),
        },
    }


def _comparisons(
    settings: ReportSettings, control: ArmCounts, arms: list[ArmCounts]
) -> list[Report]:
    treatments = [a for a in arms if a.variant != settings.control]
    rows: list[Report] = []
    for stage in COMPARED_STAGES:
        stage_rows = [_compare(settings, control, arm, stage) for arm in treatments]
        _adjust(stage_rows, len(treatments) > 1)
        rows.extend(stage_rows)
    return rows


def _adjust(rows: list[Report], many: bool) -> None:
    """Holm across the variants of one stage, for the z test and the sequential p-values."""
    for block in ("test", "sequential"):
        raw = [row[block]["p_value"] for row in rows]
        adjusted = holm(raw) if many else raw
        for row, p in zip(rows, adjusted, strict=True):
            row[block]["p_value_adjusted"] = p
            row[block]["adjustment"] = "holm" if many else "none"


def _compare(settings: ReportSettings, control: ArmCounts, arm: ArmCounts, stage: str) -> Report:
    conf = settings.confidence
    x_c, n_c, x_t, n_t = control.stage(stage), control.assigned, arm.stage(stage), arm.assigned
    diff = newcombe_diff_interval(x_c, n_c, x_t, n_t, conf)
    lift = relative_lift(x_c, n_c, x_t, n_t, conf)
    z = two_proportion_ztest(x_c, n_c, x_t, n_t)
    bayes = bayes_compare(x_c, n_c, x_t, n_t)
    defined = n_c > 0 and n_t > 0
    return {
        "variant": arm.variant,
        "control": control.variant,
        "stage": stage,
        "control_rate": _rate(x_c, n_c),
        "variant_rate": _rate(x_t, n_t),
        "difference": {
            "estimate": x_t / n_t - x_c / n_c if defined else None,
            "low": None if diff is None else diff.low,
            "high": None if diff is None else diff.high,
            "method": METHODS["difference_interval"],
        },
        "relative_lift": {
            "estimate": lift.lift,
            "low": lift.low,
            "high": lift.high,
            "method": METHODS["relative_lift_interval"],
        },
        "test": {"name": METHODS["test"], "z": z.z, "p_value": z.p_value},
        "bayes": {
            "chance_to_beat_control": bayes.chance_to_beat_control,
            "expected_loss_variant": bayes.expected_loss_treatment,
            "expected_loss_control": bayes.expected_loss_control,
            "prior": "beta(1, 1)",
        },
        "sequential": _sequential(settings, x_c, n_c, x_t, n_t),
    }


def _sequential(settings: ReportSettings, x_c: int, n_c: int, x_t: int, n_t: int) -> Report:
    args = (x_c, n_c, x_t, n_t, settings.confidence, settings.sequential_tuning)
    diff, lift = sequential_diff(*args), sequential_lift(*args)
    return {
        "method": METHODS["sequential"],
        "tuning": settings.sequential_tuning,
        "difference_low": None if diff is None else diff.low,
        "difference_high": None if diff is None else diff.high,
        "lift_low": None if lift is None else lift.low,
        "lift_high": None if lift is None else lift.high,
        "p_value": None if diff is None else diff.p_value,
        "excludes_zero": diff is not None and diff.excludes_zero,
    }


def _chi_square(arms: list[ArmCounts], stage: str) -> Report:
    result = chi_square_arms([a.stage(stage) for a in arms], [a.assigned for a in arms])
    return {"statistic": result.statistic, "df": result.df, "p_value": result.p_value}


def _srm(arms: list[ArmCounts], weights: dict[str, float]) -> Report:
    check = srm_check([a.assigned for a in arms], [weights[a.variant] for a in arms])
    return {
        "statistic": check.statistic,
        "df": check.df,
        "p_value": check.p_value,
        "mismatch": check.mismatch,
        "threshold": SRM_THRESHOLD,
        "method": METHODS["srm"],
    }


def _power(settings: ReportSettings, control: ArmCounts, arms: list[ArmCounts]) -> Report:
    baseline = _rate(control.stage(settings.metric), control.assigned)
    needed: list[Report] = []
    for arm in arms:
        if arm.variant == settings.control:
            continue
        more = None
        if baseline is not None:
            more = sample_still_needed(
                control.assigned,
                arm.assigned,
                baseline,
                settings.target_lift,
                alpha=settings.rule().alpha,
                power=settings.power,
            )
        needed.append(
            {
                "variant": arm.variant,
                "control": None if more is None else more.control,
                "treatment": None if more is None else more.treatment,
            }
        )
    return {
        "metric": settings.metric,
        "baseline_rate": baseline,
        "target_lift": settings.target_lift,
        "power": settings.power,
        "alpha": settings.rule().alpha,
        "still_needed": needed,
    }


def _timeline(
    settings: ReportSettings, arms: list[ArmCounts], daily: Sequence[DailyCounts]
) -> list[Report]:
    """Cumulative conversion rate per variant and day, with a Wilson band (fixed-horizon: it
    shows the trend, the sequential result is what decides)."""
    series: list[Report] = []
    for arm in arms:
        days = sorted((d for d in daily if d.variant == arm.variant), key=lambda d: d.day)
        assigned = converted = 0
        points: list[Report] = []
        for day in days:
            assigned, converted = assigned + day.assigned, converted + day.converted
            valid = 0 <= converted <= assigned
            ci = wilson_interval(converted, assigned, settings.confidence) if valid else None
            points.append(
                {
                    "day": day.day.isoformat(),
                    "assigned": assigned,
                    "converted": converted,
                    "rate": _rate(converted, assigned) if valid else None,
                    "low": None if ci is None else ci.low,
                    "high": None if ci is None else ci.high,
                }
            )
        series.append({"variant": arm.variant, "points": points})
    return series
