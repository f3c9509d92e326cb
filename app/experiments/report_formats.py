"""The report as CSV and as a minimal HTML page, rendered from ``build_report``'s dict.

Stand-ins until abtest's report_csv and report_html (with charts) replace them.
"""

from __future__ import annotations

import csv
import io
from html import escape
from typing import Any

from abtest.counts import STAGES

CSV_COLUMNS = (
    "variant",
    "control",
    "holdout",
    "stage",
    "count",
    "trials",
    "rate",
    "ci_low",
    "ci_high",
    "difference_vs_control",
    "difference_ci_low",
    "difference_ci_high",
    "z",
    "p_value",
    "messages",
    "cost",
    "value",
)


def _number(value: Any) -> str:
    # empty, not "None": spreadsheets read an empty cell as missing
    return "" if value is None else str(value)


def _rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arm in report["arms"]:
        for stage in STAGES:
            cell = arm["stages"][stage]
            versus = cell["vs_control"] or {}
            values = [arm["variant"], arm["control"], arm["holdout"], stage]
            values += [cell[k] for k in ("count", "trials", "rate", "ci_low", "ci_high")]
            values += [versus.get(k) for k in ("difference", "ci_low", "ci_high", "z", "p_value")]
            values += [arm["messages"], arm["cost"], arm["value"]]
            rows.append([_number(v) for v in values])
    return rows


def report_csv(report: dict[str, Any]) -> str:
    """One row per variant and funnel stage, every number of the stage against the control."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_rows(report))
    return out.getvalue()


def _percent(value: Any) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"


def _stage_td(cell: dict[str, Any]) -> str:
    interval = f"[{_percent(cell['ci_low'])}, {_percent(cell['ci_high'])}]"
    versus = cell["vs_control"]
    p = "" if not versus or versus["p_value"] is None else f"<br>p = {versus['p_value']:.4g}"
    return f"<td>{cell['count']} ({_percent(cell['rate'])})<br>{interval}{p}</td>"


def report_html(report: dict[str, Any]) -> str:
    """A self-contained page: the settings, and the funnel table with intervals and p-values."""
    head = "".join(f"<th>{escape(s)}</th>" for s in STAGES)
    body = "".join(
        f"<tr><th>{escape(a['variant'])}{' (control)' if a['control'] else ''}</th>"
        + "".join(_stage_td(a["stages"][s]) for s in STAGES)
        + f"<td>{a['messages']}</td><td>{escape(a['cost'])}</td><td>{escape(a['value'])}</td></tr>"
        for a in report["arms"]
    )
    settings = report["settings"]
    srm = report["srm"]
    winner = report["winner"] or report["sequential"]["winner"] or "none yet"
    title = escape(f"Experiment {report['experiment']}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>status {escape(report['status'])}; metric "
        f"{escape(settings['metric'])}; confidence {settings['confidence']}; "
        f"winner: {escape(winner)}; sample ratio mismatch: {'YES' if srm['mismatch'] else 'no'}"
        f"</p><table border='1'><tr><th>variant</th>{head}<th>messages</th><th>cost</th>"
        f"<th>value</th></tr>{body}</table>"
        f"<p>generated {escape(report['generated_at'])}</p></body></html>"
    )
