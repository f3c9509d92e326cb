"""The report as one self-contained HTML page: recommendation banner, summary, charts (inline SVG
from abtest.charts) and a table of every number. No external assets and no JavaScript, UTF-8 so
Chinese labels render; every user-supplied label is escaped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from abtest.charts import forest_svg, funnel_svg, pct, timeline_svg

Report = dict[str, Any]
STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 24px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th:first-child,td:first-child{text-align:left}
.banner{padding:12px 16px;border-radius:6px;margin:12px 0;font-size:15px}
.winner{background:#e3f4e1}.no_significant_difference{background:#eef1f5}
.not_enough_data{background:#fff6da}.srm{background:#fde2e1}
.charts{display:flex;flex-wrap:wrap;gap:16px}
"""
KIND_TITLES = {
    "winner": "Winner",
    "no_significant_difference": "No significant difference",
    "not_enough_data": "Not enough data",
    "srm": "Sample ratio mismatch: do not trust",
}


def report_html(report: Report) -> str:
    """The whole page for a report document from ``abtest.report.build_report``."""
    title = f"A/B report: {report['experiment']}"
    settings = report["settings"]
    metric = settings["metric"]
    metric_rows = [c for c in report["comparisons"] if c["stage"] == metric]
    sections = [
        f"<h1>{escape(title)}</h1>",
        _banner(report["recommendation"]),
        _summary(report),
        "<h2>Funnel per variant</h2><div class='charts'>",
        *(funnel_svg(v, i) for i, v in enumerate(report["variants"])),
        "</div>",
        f"<h2>Relative lift on {escape(metric)} against the control</h2>",
        "<p>Thick: fixed-horizon delta-method interval. Thin: peek-safe confidence sequence "
        "(the one decisions use). Dot: estimate.</p>",
        forest_svg(metric_rows, [v["key"] for v in report["variants"]]),
        "<h2>Cumulative conversion rate over time</h2>",
        timeline_svg(report["timeline"]),
        "<h2>Funnel counts and rates</h2>",
        _funnel_table(report["variants"], settings["confidence"]),
        "<h2>Comparisons against the control</h2>",
        _comparison_table(report["comparisons"]),
        "<h2>Tests across all arms</h2>",
        _arms_table(report),
        "<h2>Sample still needed</h2>",
        _power_table(report["power"]),
        "<h2>Costs</h2>",
        _cost_table(report["variants"]),
        "<h2>Settings</h2>",
        _settings_table(settings),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )


def _banner(recommendation: Report) -> str:
    kind = recommendation["kind"]
    heading = str(KIND_TITLES.get(kind, kind))
    if recommendation["variant"] is not None:
        heading += f": {recommendation['variant']}"
    return (
        f'<div class="banner {escape(kind)}"><strong>{escape(heading)}</strong><br>'
        f"{escape(recommendation['reason'])}</div>"
    )


def _summary(report: Report) -> str:
    settings, srm = report["settings"], report["srm"]
    chi = report["chi_square"][settings["metric"]]
    items = [
        f"Primary metric: {settings['metric']}, confidence {pct(settings['confidence'])}, "
        f"attribution window {settings['attribution_hours']} h",
        f"Control: {settings['control']}; variants: {len(report['variants'])}",
        f"Sample ratio check p = {_num(srm['p_value'])} (mismatch below {srm['threshold']})",
        f"Chi-square across all arms on {settings['metric']}: p = {_num(chi['p_value'])}",
        *_stored_items(report),
    ]
    return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"


def _stored_items(report: Report) -> list[str]:
    """What the platform adds to the document (app/experiments/reporting.py), when present:
    the experiment's status, the recorded winner and when the report was generated."""
    items = []
    lifecycle = report.get("lifecycle")
    if lifecycle:
        started = lifecycle.get("started_at") or "not yet"
        items.append(f"Status: {lifecycle.get('status')}; started {started}")
    if report.get("winner"):
        decision = report.get("winner_decision") or {}
        by, at = decision.get("by", "n/a"), decision.get("at", "n/a")
        items.append(f"Recorded winner: {report['winner']} (decided by {by} at {at})")
    if report.get("generated_at"):
        items.append(f"Generated at {report['generated_at']}")
    return items


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_num(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _funnel_table(variants: Sequence[Report], confidence: float) -> str:
    keys = ("rate", "ci_low", "ci_high")
    rows = [
        [v["key"], s["stage"], s["count"], *(pct(s[k], 2) for k in keys)]
        for v in variants
        for s in v["stages"]
    ]
    level = pct(confidence, 0)
    return _table(["variant", "stage", "customers", "rate", f"{level} low", f"{level} high"], rows)


def _arms_table(report: Report) -> str:
    rows = [
        [f"chi-square, {stage}", chi["statistic"], chi["df"], chi["p_value"], ""]
        for stage, chi in report["chi_square"].items()
    ]
    srm = report["srm"]
    srm_row = [srm["statistic"], srm["df"], srm["p_value"], srm["mismatch"]]
    rows.append(["sample ratio (assigned vs weights)", *srm_row])
    return _table(["test", "statistic", "df", "p-value", "mismatch"], rows)


def _power_table(power: Report) -> str:
    caption = (
        f"To detect a {pct(power['target_lift'], 0)} relative lift on {power['metric']} from a "
        f"baseline of {pct(power['baseline_rate'], 2)} with {pct(power['power'], 0)} power at "
        f"alpha {power['alpha']}:"
    )
    rows = [[n["variant"], n["control"], n["treatment"]] for n in power["still_needed"]]
    table = _table(["variant", "more in control", "more in variant"], rows)
    return f"<p>{escape(caption)}</p>{table}"


def _comparison_table(comparisons: Sequence[Report]) -> str:
    header = [
        "variant", "stage", "difference", "diff low", "diff high", "lift", "lift low",
        "lift high", "z test p", "adjusted p", "chance to beat", "loss (variant)",
        "loss (control)", "CS low", "CS high", "CS lift low", "CS lift high", "CS p (adjusted)",
    ]  # fmt: skip
    rows = []
    for c in comparisons:
        d, lift, seq = c["difference"], c["relative_lift"], c["sequential"]
        rows.append(
            [
                *(c["variant"], c["stage"], pct(d["estimate"], 2), pct(d["low"], 2)),
                *(pct(d["high"], 2), pct(lift["estimate"]), pct(lift["low"]), pct(lift["high"])),
                *(c["test"]["p_value"], c["test"]["p_value_adjusted"]),
                pct(c["bayes"]["chance_to_beat_control"]),
                *(
                    pct(c["bayes"][k], 3)
                    for k in ("expected_loss_variant", "expected_loss_control")
                ),
                *(pct(seq["difference_low"], 2), pct(seq["difference_high"], 2)),
                *(pct(seq["lift_low"]), pct(seq["lift_high"])),
                seq["p_value_adjusted"],
            ]
        )
    return _table(header, rows)


def _cost_table(variants: Sequence[Report]) -> str:
    keys = ["total", "per_message", "per_sent", "per_delivered", "per_conversion"]
    keys += ["incremental_conversions", "per_incremental_conversion"]
    rows = [[v["key"], *(v["costs"][k] for k in keys)] for v in variants]
    return _table(["variant", *(k.replace("_", " ") for k in keys)], rows)


def _settings_table(settings: Report) -> str:
    rows = [[k, v] for k, v in settings.items() if k != "variants"]
    rows += [
        [f"variant {v['key']}", f"weight {v['weight']}, {v['channel']} / {v['template']} / "
         f"{v['format']}"]
        for v in settings["variants"]
    ]  # fmt: skip
    return _table(["setting", "value"], rows)
