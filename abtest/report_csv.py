"""The report as CSV: one row per variant and funnel stage, every number of the report.

Analysts open it in a spreadsheet (GrowthBook users ask for "exports of every statistic",
growthbook#3089), so the comparison with the control and the costs sit on the same row.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from abtest.report import Report

CSV_COLUMNS = (
    "experiment",
    "variant",
    "is_control",
    "channel",
    "template",
    "format",
    "stage",
    "count",
    "rate",
    "ci_low",
    "ci_high",
    "control_rate",
    "difference",
    "difference_low",
    "difference_high",
    "relative_lift",
    "relative_lift_low",
    "relative_lift_high",
    "test",
    "z",
    "p_value",
    "p_value_adjusted",
    "chance_to_beat_control",
    "expected_loss_variant",
    "expected_loss_control",
    "sequential_low",
    "sequential_high",
    "sequential_lift_low",
    "sequential_lift_high",
    "sequential_p_value",
    "sequential_p_value_adjusted",
    "cost_total",
    "cost_per_message",
    "cost_per_sent",
    "cost_per_delivered",
    "cost_per_conversion",
    "incremental_conversions",
    "cost_per_incremental_conversion",
)


def report_csv(report: Report) -> str:
    """One row per variant and stage, with the comparison against the control on that stage and
    the variant's costs; a header row; empty cells for undefined values. Encode it as UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    by_key = {(c["variant"], c["stage"]): c for c in report["comparisons"]}
    for variant in report["variants"]:
        for stage in variant["stages"]:
            comparison = by_key.get((variant["key"], stage["stage"]))
            row = _csv_row(report["experiment"], variant, stage, comparison)
            writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def _csv_row(experiment: str, variant: Report, stage: Report, c: Report | None) -> list[Any]:
    costs = variant["costs"]
    compared: list[Any] = [None] * 20
    if c is not None:
        d, lift, test, bayes, seq = (
            c["difference"],
            c["relative_lift"],
            c["test"],
            c["bayes"],
            c["sequential"],
        )
        compared = [
            *(c["control_rate"], d["estimate"], d["low"], d["high"]),
            *(lift["estimate"], lift["low"], lift["high"]),
            *(test["name"], test["z"], test["p_value"], test["p_value_adjusted"]),
            bayes["chance_to_beat_control"],
            *(bayes["expected_loss_variant"], bayes["expected_loss_control"]),
            *(seq["difference_low"], seq["difference_high"], seq["lift_low"], seq["lift_high"]),
            *(seq["p_value"], seq["p_value_adjusted"]),
        ]
    return [
        *(experiment, variant["key"], variant["is_control"]),
        *(variant["channel"], variant["template"], variant["format"]),
        *(stage["stage"], stage["count"], stage["rate"], stage["ci_low"], stage["ci_high"]),
        *compared,
        *(costs["total"], costs["per_message"], costs["per_sent"], costs["per_delivered"]),
        *(costs["per_conversion"], costs["incremental_conversions"]),
        costs["per_incremental_conversion"],
    ]
