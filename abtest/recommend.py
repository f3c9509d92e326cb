"""The recommendation an analyst (and the auto-winner) acts on, with its reason and the numbers
behind it.

The checks run in the order in which they make the later ones meaningless:

1. ``srm``: the arms' sizes do not match the configured weights (p < 0.001): assignment or
   tracking is broken, so no comparison can be trusted (Fabijan et al. 2019).
2. ``not_enough_data``: an arm has fewer customers than the minimum sample, or there is no
   control or no variant to compare it with.
3. ``winner``: the peek-safe confidence sequence of a variant against the control excludes 0
   (abtest.sequential), i.e. its always-valid p-value is below alpha, Holm-adjusted across the
   variants when there are more than two arms. The best significantly better variant wins; the
   control wins when every variant is significantly worse.
4. ``no_significant_difference`` otherwise.

Only the peek-safe result decides: a fixed-horizon p-value checked at every report would declare
false winners far more often than alpha (see tests/abtest/test_sequential.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from abtest.counts import ArmCounts
from abtest.power import sample_still_needed
from abtest.sequential import DEFAULT_TUNING, sequential_diff
from abtest.stats import holm, srm_check

Kind = Literal["srm", "not_enough_data", "winner", "no_significant_difference"]
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
SRM_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What to do: ``kind``, the winning ``variant`` (only for "winner"), an English ``reason``
    for analysts, and the ``numbers`` it rests on (JSON-ready)."""

    kind: Kind
    variant: str | None
    reason: str
    numbers: dict[str, JsonValue] = field(default_factory=dict)

    def as_dict(self) -> dict[str, JsonValue]:
        """The recommendation as a JSON-ready dict."""
        return {
            "kind": self.kind,
            "variant": self.variant,
            "reason": self.reason,
            "numbers": self.numbers,
        }


@dataclass(frozen=True, slots=True)
class DecisionRule:
    """How sure and how large: the settings a recommendation is made with."""

    control: str
    metric: str = "converted"
    confidence: float = 0.95
    min_sample: int = 100
    target_lift: float = 0.1
    power: float = 0.8
    tuning: float = DEFAULT_TUNING

    @property
    def alpha(self) -> float:
        """1 - confidence, without the float noise (0.050000000000000044) in the JSON."""
        return round(1.0 - self.confidence, 12)


def recommend(
    arms: Sequence[ArmCounts], weights: Mapping[str, float], rule: DecisionRule
) -> Recommendation:
    """Recommend from the arms' funnel counts (rates of ``rule.metric`` over assigned customers)
    and the configured ``weights`` per variant (arms missing from ``weights`` weigh 0)."""
    # A variant configured with weight 0 (switched off) and nobody in it is not part of the
    # experiment: it must not hold the recommendation at "not enough data" forever.
    arms = [a for a in arms if a.assigned > 0 or weights.get(a.variant, 0.0) > 0.0]
    srm = _srm(arms, weights)
    if srm is not None:
        return srm
    control = next((a for a in arms if a.variant == rule.control), None)
    treatments = [a for a in arms if a.variant != rule.control]
    if control is None or not treatments:
        return Recommendation(
            "not_enough_data",
            None,
            "The experiment needs a control arm and at least one variant with customers.",
            {"arms": [a.variant for a in arms], "control": rule.control},
        )
    small = [a for a in arms if a.assigned < rule.min_sample]
    if small:
        return _not_enough(control, treatments, small, rule)
    return _compare(control, treatments, rule)


def _srm(arms: Sequence[ArmCounts], weights: Mapping[str, float]) -> Recommendation | None:
    arm_weights = [float(weights.get(a.variant, 0.0)) for a in arms]
    if len(arms) < 2 or sum(arm_weights) <= 0.0:
        return None
    check = srm_check([a.assigned for a in arms], arm_weights, SRM_THRESHOLD)
    if not check.mismatch:
        return None
    observed = ", ".join(f"{a.variant}: {a.assigned}" for a in arms)
    return Recommendation(
        "srm",
        None,
        f"Sample ratio mismatch (p = {check.p_value:.2g} < {SRM_THRESHOLD}): the arms' sizes "
        f"({observed}) do not match the configured weights. Assignment or tracking is broken; "
        "do not trust any comparison until the cause is found.",
        {
            "srm_statistic": check.statistic,
            "srm_p_value": check.p_value,
            "threshold": SRM_THRESHOLD,
        },
    )


def _rate(arm: ArmCounts, metric: str) -> float | None:
    return arm.stage(metric) / arm.assigned if arm.assigned else None


def still_needed(control: ArmCounts, arm: ArmCounts, rule: DecisionRule) -> tuple[int, int]:
    """Customers still needed in (control, arm): the minimum sample, or more if the power
    calculation for the target lift at the control's current rate asks for more."""
    needed_c = max(0, rule.min_sample - control.assigned)
    needed_t = max(0, rule.min_sample - arm.assigned)
    baseline = _rate(control, rule.metric)
    power = None
    if baseline is not None:
        power = sample_still_needed(
            control.assigned,
            arm.assigned,
            baseline,
            rule.target_lift,
            alpha=rule.alpha,
            power=rule.power,
        )
    if power is not None:
        needed_c, needed_t = max(needed_c, power.control), max(needed_t, power.treatment)
    return needed_c, needed_t


def _not_enough(
    control: ArmCounts,
    treatments: list[ArmCounts],
    small: list[ArmCounts],
    rule: DecisionRule,
) -> Recommendation:
    needed = {arm.variant: still_needed(control, arm, rule) for arm in treatments}
    names = ", ".join(f"{a.variant} ({a.assigned})" for a in small)
    most = max(max(pair) for pair in needed.values())
    rows: list[JsonValue] = [
        {"variant": v, "control": c, "treatment": t} for v, (c, t) in needed.items()
    ]
    return Recommendation(
        "not_enough_data",
        None,
        f"Not enough data: {names} below the minimum sample of {rule.min_sample} customers per "
        f"arm. About {most} more customers per arm are needed to detect a "
        f"{rule.target_lift:.0%} relative lift with {rule.power:.0%} power.",
        {"min_sample": rule.min_sample, "still_needed": rows},
    )


def _compare(control: ArmCounts, treatments: list[ArmCounts], rule: DecisionRule) -> Recommendation:
    rows = _sequences([(arm.variant, control, arm) for arm in treatments], rule)
    numbers: dict[str, JsonValue] = {
        "alpha": rule.alpha,
        "metric": rule.metric,
        "control_rate": _rate(control, rule.metric),
        "adjustment": "holm" if len(treatments) > 1 else "none",
        "comparisons": list(rows),
    }
    return _decide(control, rows, numbers, rule, {a.variant: a for a in treatments})


def _decide(
    control: ArmCounts,
    rows: list[dict[str, JsonValue]],
    numbers: dict[str, JsonValue],
    rule: DecisionRule,
    arms: dict[str, ArmCounts],
) -> Recommendation:
    better = [r for r in rows if r["significant"] and _positive(r["difference"])]
    worse = [r for r in rows if r["significant"] and not _positive(r["difference"])]
    how = "Holm-adjusted " if len(rows) > 1 else ""
    level = f"{rule.confidence:.0%}"
    if better:
        best = max(better, key=lambda r: r["rate"] if isinstance(r["rate"], float) else 0.0)
        name = str(best["variant"])
        rivals = [str(r["variant"]) for r in rows if r is not best]
        if rivals and not _beats_rivals(arms[name], [arms[v] for v in rivals], numbers, rule):
            return Recommendation(
                "no_significant_difference",
                None,
                f"{name} beats the control on {rule.metric}, but not yet {' and '.join(rivals)} "
                f"by the peek-safe {level} confidence sequence: keep the experiment running "
                "to tell them apart.",
                numbers,
            )
        return Recommendation(
            "winner",
            name,
            f"{name} beats the control on {rule.metric} (rate {_pct(best['rate'])} vs "
            f"{_pct(numbers['control_rate'])}): its peek-safe {level} confidence sequence for the "
            f"difference excludes 0 ({how}always-valid p = {_p(best['p_value_adjusted'])}).",
            numbers,
        )
    if len(worse) == len(rows):
        return Recommendation(
            "winner",
            control.variant,
            f"The control {control.variant} wins on {rule.metric}: every variant is "
            f"significantly worse by its peek-safe {level} confidence sequence.",
            numbers,
        )
    return Recommendation(
        "no_significant_difference",
        None,
        f"No variant differs from the control on {rule.metric} at {level} by the peek-safe "
        "confidence sequence yet; keep the experiment running or accept that the difference "
        f"is smaller than it can detect. Significantly worse: {len(worse)} of {len(rows)}.",
        numbers,
    )


def _beats_rivals(
    best: ArmCounts,
    rivals: list[ArmCounts],
    numbers: dict[str, JsonValue],
    rule: DecisionRule,
) -> bool:
    """Whether ``best`` beats every other variant too, by the same peek-safe sequences (Holm
    across them): against a holdout control several variants often beat the control, and
    the highest raw rate among them is no evidence by itself."""
    rows = _sequences([(rival.variant, rival, best) for rival in rivals], rule)
    for row, rival in zip(rows, rivals, strict=True):
        row["rate"] = _rate(rival, rule.metric)  # the rival's; the difference is best - rival
        row["significant"] = row["significant"] and _positive(row["difference"])
    numbers["best_against_rivals"] = {"variant": best.variant, "comparisons": list(rows)}
    return all(row["significant"] for row in rows)


def _sequences(
    pairs: list[tuple[str, ArmCounts, ArmCounts]], rule: DecisionRule
) -> list[dict[str, JsonValue]]:
    """For each (name, base, arm): the peek-safe sequence for the difference arm - base, its
    always-valid p-value, Holm-adjusted across the pairs when there are several."""
    rows: list[dict[str, JsonValue]] = []
    raw: list[float | None] = []
    for name, base, arm in pairs:
        cs = sequential_diff(
            base.stage(rule.metric),
            base.assigned,
            arm.stage(rule.metric),
            arm.assigned,
            rule.confidence,
            rule.tuning,
        )
        raw.append(None if cs is None else cs.p_value)
        rows.append(
            {
                "variant": name,
                "rate": _rate(arm, rule.metric),
                "difference": None if cs is None else cs.estimate,
                "cs_low": None if cs is None else cs.low,
                "cs_high": None if cs is None else cs.high,
                "p_value": None if cs is None else cs.p_value,
            }
        )
    adjusted = holm(raw) if len(pairs) > 1 else raw
    for row, p in zip(rows, adjusted, strict=True):
        row["p_value_adjusted"] = p
        row["significant"] = p is not None and p < rule.alpha
    return rows


def _positive(value: JsonValue) -> bool:
    return isinstance(value, float) and value > 0.0


def _pct(value: JsonValue) -> str:
    return f"{value:.2%}" if isinstance(value, float) else "n/a"


def _p(value: JsonValue) -> str:
    return f"{value:.3g}" if isinstance(value, float) else "n/a"
