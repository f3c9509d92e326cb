"""abtest.report and abtest.report_csv: the report wires every number to the right primitive
(checked against statsmodels and scipy on random counts), is valid JSON on edge cases, and its
CSV round-trips."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency, chisquare
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from abtest.bayes import bayes_compare
from abtest.counts import STAGES, ArmCounts, DailyCounts
from abtest.report import ReportSettings, VariantSettings, build_report
from abtest.report_csv import CSV_COLUMNS, report_csv
from abtest.sequential import sequential_diff
from abtest.stats import holm, relative_lift

REL = 1e-8


def close(ours: float | None, ref: float) -> bool:
    return ours is not None and math.isclose(ours, ref, rel_tol=REL, abs_tol=1e-12)


def make_settings(keys: list[str], weights: list[float] | None = None, **kw: Any) -> ReportSettings:
    weights = weights or [1.0] * len(keys)
    variants = tuple(
        VariantSettings(k, w, channel="sms", template=f"t-{k}", format="text")
        for k, w in zip(keys, weights, strict=True)
    )
    return ReportSettings(experiment_key="exp-1", control=keys[0], variants=variants, **kw)


def assert_json_ready(value: Any) -> None:
    """Only JSON's types, and no NaN or infinity anywhere."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for item in value.values():
            assert_json_ready(item)
    elif isinstance(value, list):
        for item in value:
            assert_json_ready(item)
    elif isinstance(value, float):
        assert math.isfinite(value)
    else:
        assert value is None or isinstance(value, str | int | bool)


def check_document(report: dict[str, Any]) -> None:
    assert_json_ready(report)
    json.dumps(report, allow_nan=False)
    assert report["recommendation"]["kind"] in {
        "srm",
        "not_enough_data",
        "winner",
        "no_significant_difference",
    }


@st.composite
def funnel(draw: st.DrawFn, name: str) -> ArmCounts:
    assigned = draw(st.one_of(st.integers(0, 30), st.integers(0, 5000)))
    chain = [assigned]
    for _ in STAGES[1:]:
        chain.append(draw(st.integers(0, chain[-1])))
    assigned, sent, delivered, clicked, converted = chain
    cost = Decimal("0.05") * sent
    return ArmCounts(name, assigned, sent, delivered, clicked, converted, sent, cost)


@st.composite
def experiments(draw: st.DrawFn) -> list[ArmCounts]:
    k = draw(st.integers(2, 4))
    return [draw(funnel(f"v{i}")) for i in range(k)]


@settings(max_examples=40, deadline=None)
@given(experiments(), st.sampled_from([0.9, 0.95, 0.99]))
def test_report_numbers_agree_with_references(arms: list[ArmCounts], confidence: float) -> None:
    report = build_report(make_settings([a.variant for a in arms], confidence=confidence), arms, [])
    check_document(report)
    for arm, variant in zip(arms, report["variants"], strict=True):
        for stage in variant["stages"]:
            check_stage(arm, stage, confidence)
    for row in report["comparisons"]:
        check_comparison(arms, row, confidence)
        check_wiring(arms, row, confidence)
    check_holm(report, len(arms))
    check_chi_square(arms, report)
    check_srm(arms, report)


def check_stage(arm: ArmCounts, stage: dict[str, Any], confidence: float) -> None:
    count = arm.stage(stage["stage"])
    assert stage["count"] == count
    if arm.assigned == 0:
        assert stage["rate"] is None
        assert stage["ci_low"] is None
        return
    low, high = proportion_confint(count, arm.assigned, alpha=1 - confidence, method="wilson")
    assert stage["rate"] == count / arm.assigned
    assert close(stage["ci_low"], float(low))
    assert close(stage["ci_high"], float(high))


def check_comparison(arms: list[ArmCounts], row: dict[str, Any], confidence: float) -> None:
    control = arms[0]
    arm = next(a for a in arms if a.variant == row["variant"])
    x1, n1, x2, n2 = (
        control.stage(row["stage"]),
        control.assigned,
        arm.stage(row["stage"]),
        arm.assigned,
    )
    assert row["test"]["name"] == "two_proportion_pooled_z_test"
    if n1 == 0 or n2 == 0:
        assert row["difference"]["low"] is None
        assert row["test"]["p_value"] is None
        return
    low, high = confint_proportions_2indep(
        x2, n2, x1, n1, compare="diff", method="newcomb", alpha=1 - confidence
    )
    assert close(row["difference"]["low"], float(low))
    assert close(row["difference"]["high"], float(high))
    if x1 + x2 in (0, n1 + n2):
        assert row["test"]["p_value"] is None
        return
    z, p = proportions_ztest([x1, x2], [n1, n2])
    assert close(row["test"]["z"], -float(z))
    assert math.isclose(row["test"]["p_value"], float(p), rel_tol=1e-7, abs_tol=1e-300)


def check_wiring(arms: list[ArmCounts], row: dict[str, Any], confidence: float) -> None:
    """Numbers without a statsmodels counterpart come from primitives tested on their own
    (test_stats, test_bayes, test_sequential): check the report passes them the right counts."""
    control = arms[0]
    arm = next(a for a in arms if a.variant == row["variant"])
    args = (control.stage(row["stage"]), control.assigned, arm.stage(row["stage"]), arm.assigned)
    assert tuple(row["relative_lift"][k] for k in ("estimate", "low", "high")) == tuple(
        relative_lift(*args, confidence)
    )
    bayes = bayes_compare(*args)
    assert row["bayes"]["chance_to_beat_control"] == bayes.chance_to_beat_control
    assert row["bayes"]["expected_loss_variant"] == bayes.expected_loss_treatment
    cs = sequential_diff(*args, confidence)
    assert row["sequential"]["difference_low"] == (None if cs is None else cs.low)
    assert row["sequential"]["p_value"] == (None if cs is None else cs.p_value)


def check_holm(report: dict[str, Any], k: int) -> None:
    for stage in STAGES[1:]:
        rows = [r for r in report["comparisons"] if r["stage"] == stage]
        defined = [r for r in rows if r["test"]["p_value"] is not None]
        if k == 2 or not defined:
            assert all(r["test"]["p_value_adjusted"] == r["test"]["p_value"] for r in rows)
            continue
        # abtest.stats.holm agrees with multipletests (test_stats.py), which costs ~0.1 s a call:
        # here check the wiring against ours, and against multipletests once below.
        ref = holm([r["test"]["p_value"] for r in defined])
        assert [r["test"]["p_value_adjusted"] for r in defined] == ref
        seq = [r["sequential"]["p_value"] for r in rows]
        assert [r["sequential"]["p_value_adjusted"] for r in rows] == holm(seq)


def test_holm_wiring_agrees_with_multipletests() -> None:
    arms = [funnel_of("c", 2000, 200), funnel_of("b", 2000, 230), funnel_of("d", 2000, 260)]
    report = build_report(make_settings(["c", "b", "d"]), arms, [])
    rows = [r for r in report["comparisons"] if r["stage"] == "converted"]
    ref = multipletests([r["test"]["p_value"] for r in rows], method="holm")[1]
    for row, p in zip(rows, ref, strict=True):
        assert math.isclose(row["test"]["p_value_adjusted"], float(p), rel_tol=1e-9)
        assert row["test"]["adjustment"] == "holm"


def check_chi_square(arms: list[ArmCounts], report: dict[str, Any]) -> None:
    for stage in STAGES[1:]:
        ours = report["chi_square"][stage]
        table = [(a.stage(stage), a.assigned - a.stage(stage)) for a in arms if a.assigned]
        successes = sum(x for x, _ in table)
        failures = sum(f for _, f in table)
        if len(table) < 2 or successes == 0 or failures == 0:
            assert ours["p_value"] is None
            continue
        stat, p, df, _ = chi2_contingency([list(c) for c in zip(*table, strict=True)], False)
        assert close(ours["statistic"], float(stat))
        assert ours["df"] == df
        assert math.isclose(ours["p_value"], float(p), rel_tol=1e-7, abs_tol=1e-300)


def check_srm(arms: list[ArmCounts], report: dict[str, Any]) -> None:
    counts = [a.assigned for a in arms]
    if sum(counts) == 0:
        assert report["srm"]["p_value"] is None
        return
    stat, p = chisquare(counts)
    assert close(report["srm"]["statistic"], float(stat))
    assert math.isclose(report["srm"]["p_value"], float(p), rel_tol=1e-7, abs_tol=1e-300)
    assert report["srm"]["mismatch"] == (p < 0.001)
    if p < 0.001:
        assert report["recommendation"]["kind"] == "srm"


def funnel_of(name: str, assigned: int, converted: int, clicked: int | None = None) -> ArmCounts:
    clicked = converted if clicked is None else clicked
    return ArmCounts(name, assigned, assigned, assigned, clicked, converted)


@pytest.mark.parametrize(
    "arms",
    [
        [funnel_of("c", 1000, 0), funnel_of("b", 1000, 0)],  # zero conversions everywhere
        [funnel_of("c", 0, 0), funnel_of("b", 0, 0)],  # nothing yet
        [funnel_of("c", 500, 5), funnel_of("b", 0, 0)],  # one arm empty
        [funnel_of("c", 3, 1), funnel_of("b", 2, 2)],  # tiny samples
        [funnel_of("c", 10, 10), funnel_of("b", 10, 10)],  # everybody converts
        [funnel_of("c", 500, 5)],  # variant missing from the data
        [
            funnel_of("c", 100, 5),
            funnel_of("b", 100, 6),
            funnel_of("stray", 7, 1),
        ],  # not configured
    ],
)
def test_edge_cases_give_valid_json(arms: list[ArmCounts]) -> None:
    report = build_report(make_settings(["c", "b"]), arms, [])
    check_document(report)
    assert [v["key"] for v in report["variants"]][:2] == ["c", "b"]


def test_published_example_smokers() -> None:
    # R's prop.test(smokers, patients): X-squared = 12.6, df = 3, p-value = 0.005585.
    smokers, patients = [83, 90, 129, 70], [86, 93, 136, 82]
    pairs = zip(smokers, patients, strict=True)
    arms = [funnel_of(f"g{i}", n, x) for i, (x, n) in enumerate(pairs)]
    report = build_report(make_settings([a.variant for a in arms]), arms, [])
    chi = report["chi_square"]["converted"]
    assert round(chi["statistic"], 1) == 12.6
    assert chi["df"] == 3
    assert round(chi["p_value"], 6) == 0.005585


def test_single_arm_experiment() -> None:
    report = build_report(make_settings(["c"]), [funnel_of("c", 900, 20)], [])
    check_document(report)
    assert report["comparisons"] == []
    assert report["recommendation"]["kind"] == "not_enough_data"


def test_winner_report_and_costs() -> None:
    arms = [
        ArmCounts("holdout", 5000, 0, 0, 0, 400),
        ArmCounts("sms", 5000, 5000, 4900, 900, 600, 5000, Decimal("250.00"), Decimal("6000")),
    ]
    report = build_report(make_settings(["holdout", "sms"], metric="converted"), arms, [])
    check_document(report)
    assert report["recommendation"]["kind"] == "winner"
    assert report["recommendation"]["variant"] == "sms"
    costs = report["variants"][1]["costs"]
    assert costs["per_message"] == "0.0500"
    assert costs["incremental_conversions"] == pytest.approx(200.0)
    assert costs["per_incremental_conversion"] == "1.2500"
    assert report["variants"][0]["costs"]["per_incremental_conversion"] is None
    assert report["settings"]["variants"][1]["channel"] == "sms"


def test_timeline_is_cumulative_with_a_band() -> None:
    start = date(2026, 11, 1)
    daily = [
        DailyCounts("b", start + timedelta(days=1), 100, 12),
        DailyCounts("b", start, 100, 8),
        DailyCounts("c", start, 0, 0),
    ]
    report = build_report(
        make_settings(["c", "b"]), [funnel_of("c", 0, 0), funnel_of("b", 200, 20)], daily
    )
    check_document(report)
    series = {s["variant"]: s["points"] for s in report["timeline"]}
    assert [p["day"] for p in series["b"]] == ["2026-11-01", "2026-11-02"]
    assert [p["rate"] for p in series["b"]] == [0.08, 0.1]
    low, high = proportion_confint(20, 200, method="wilson")
    assert close(series["b"][1]["low"], float(low))
    assert close(series["b"][1]["high"], float(high))
    assert series["c"][0]["rate"] is None


def test_inconsistent_counts_and_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        build_report(make_settings(["c", "b"]), [funnel_of("c", 10, 11)], [])
    with pytest.raises(ValueError, match="control"):
        ReportSettings("e", "x", (VariantSettings("c", 1.0),))
    with pytest.raises(ValueError, match="metric"):
        make_settings(["c", "b"], metric="assigned")
    with pytest.raises(ValueError, match="weights"):
        make_settings(["c", "b"], weights=[0.0, 0.0])


def test_csv_round_trips() -> None:
    arms = [funnel_of("控制组", 1000, 100, 300), funnel_of('b,"x"\n', 1000, 130, 320)]
    report = build_report(make_settings([a.variant for a in arms]), arms, [])
    text = report_csv(report)
    text.encode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + 2 * len(STAGES)
    cells = [dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:]]
    assert {c["variant"] for c in cells} == {"控制组", 'b,"x"\n'}
    converted = next(c for c in cells if c["variant"] != "控制组" and c["stage"] == "converted")
    row = next(
        r for r in report["comparisons"] if r["stage"] == "converted" and r["variant"] != "控制组"
    )
    assert float(converted["p_value"]) == row["test"]["p_value"]
    assert float(converted["sequential_low"]) == row["sequential"]["difference_low"]
    assert float(converted["rate"]) == 0.13
    control_row = next(c for c in cells if c["variant"] == "控制组" and c["stage"] == "converted")
    assert control_row["p_value"] == ""
