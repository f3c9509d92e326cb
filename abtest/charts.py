"""Inline SVG charts for the HTML report, drawn from the report document (abtest.report).

Plain strings, no plotting library and no JavaScript, so the page is one self-contained file an
analyst can mail or archive. Every label that comes from users (variant keys) goes through
``html.escape``; numbers are formatted here. Undefined values (None) are left out of a chart and
said so in words, never drawn at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

Report = dict[str, Any]
COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#af7aa1", "#edc948", "#9c755f")
FONT = 'font-family="sans-serif" font-size="12"'
# The forest plot clips at these lifts: a tiny control makes the delta-method bounds explode, and
# one such row must not squash the others to a dot. Clipped ends are drawn as arrows.
LIFT_FLOOR, LIFT_CEILING = -1.0, 3.0


def color(index: int) -> str:
    """The series colour of the ``index``-th variant."""
    return COLORS[index % len(COLORS)]


def pct(value: float | None, digits: int = 1) -> str:
    """A rate or lift as a percentage; "n/a" when undefined."""
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def _svg(width: int, height: int, body: Sequence[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {FONT}{extra}>{escape(text)}</text>'
    )


def funnel_svg(variant: Report, index: int = 0) -> str:
    """Horizontal bars per funnel stage, each as a share of the variant's assigned customers."""
    width, label_w, bar_w, row_h = 460, 80, 260, 24
    stages = variant["stages"]
    assigned = stages[0]["count"]
    body = [_text(0, 14, f"{variant['key']} ({assigned} assigned)", extra=' font-weight="bold"')]
    for i, stage in enumerate(stages):
        y = 24 + i * row_h
        share = stage["count"] / assigned if assigned else 0.0
        body.append(_text(0, y + 15, stage["stage"]))
        body.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * share:.1f}" height="{row_h - 6}" '
            f'fill="{color(index)}"/>'
        )
        body.append(_text(label_w + bar_w + 6, y + 15, f"{stage['count']} ({pct(stage['rate'])})"))
    height = 24 + len(stages) * row_h + 4
    return _svg(width, height, body, f"Funnel of {variant['key']}")


def _forest_domain(rows: Sequence[Report]) -> tuple[float, float]:
    values = [0.0]
    for row in rows:
        lift, seq = row["relative_lift"], row["sequential"]
        values += [v for v in (lift["low"], lift["high"], seq["lift_low"], seq["lift_high"]) if v]
    low = max(LIFT_FLOOR, min(values) - 0.05)
    high = min(LIFT_CEILING, max(values) + 0.05)
    return low, high


def forest_svg(rows: Sequence[Report], keys: Sequence[str] = ()) -> str:
    """Relative lift of each variant against the control with its delta-method interval (thick)
    and its peek-safe confidence sequence (thin, wider), and a line at 0 (no difference).
    ``keys``: all variant keys in report order, so each row takes its variant's colour."""
    width, label_w, plot_w, row_h, top = 620, 140, 360, 30, 30
    low, high = _forest_domain(rows)

    def x(value: float) -> float:
        clipped = min(high, max(low, value))
        return label_w + (clipped - low) / (high - low) * plot_w

    height = top + row_h * max(1, len(rows)) + 30
    body = [
        f'<line x1="{x(0):.1f}" y1="{top - 10}" x2="{x(0):.1f}" y2="{height - 24}" '
        'stroke="#333" stroke-dasharray="4 3"/>',
        _text(x(0), top - 14, "0 (no difference)", "middle"),
    ]
    for tick in _ticks(low, high):
        body.append(_text(x(tick), height - 8, pct(tick, 0), "middle"))
    for i, row in enumerate(rows):
        index = keys.index(row["variant"]) if row["variant"] in keys else i + 1
        body += _forest_row(row, top + i * row_h + row_h / 2, x, color(index))
    if not rows:
        body.append(_text(label_w, top + 15, "No variant to compare with the control."))
    return _svg(width, height, body, "Relative lift against the control")


def _forest_row(row: Report, y: float, x: Any, stroke: str) -> list[str]:
    lift, seq = row["relative_lift"], row["sequential"]
    parts = [_text(0, y + 4, str(row["variant"]))]
    if lift["estimate"] is None:
        return [*parts, _text(150, y + 4, "lift undefined (control has no conversions yet)")]
    if seq["lift_low"] is not None:
        parts.append(_segment(x(seq["lift_low"]), x(seq["lift_high"]), y, stroke, 1.5))
    if lift["low"] is not None:
        parts.append(_segment(x(lift["low"]), x(lift["high"]), y, stroke, 5))
    parts.append(f'<circle cx="{x(lift["estimate"]):.1f}" cy="{y:.1f}" r="4" fill="#000"/>')
    parts.append(_text(510, y + 4, f"{pct(lift['estimate'])}"))
    return parts


def _segment(x1: float, x2: float, y: float, stroke: str, width: float) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{stroke}" '
        f'stroke-width="{width}" stroke-opacity="0.8"/>'
    )


def _ticks(low: float, high: float) -> list[float]:
    step = next(s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0) if (high - low) / s <= 8)
    first = int(low / step) - 1
    return [t * step for t in range(first, first + 12) if low <= t * step <= high]


def timeline_svg(timeline: Sequence[Report]) -> str:
    """Cumulative conversion rate per variant and day, with its Wilson band."""
    width, height, left, top, plot_w, plot_h = 620, 260, 50, 20, 440, 190
    days = sorted({p["day"] for s in timeline for p in s["points"] if p["rate"] is not None})
    highs = [p["high"] for s in timeline for p in s["points"] if p["high"] is not None]
    if not days:
        return _svg(width, 40, [_text(0, 20, "No daily data yet.")], "Cumulative conversion")
    y_max = max(highs) or 1.0

    def xy(day: str, rate: float) -> str:
        i = days.index(day)
        x = left + (plot_w * i / (len(days) - 1) if len(days) > 1 else plot_w / 2)
        return f"{x:.1f},{top + plot_h - rate / y_max * plot_h:.1f}"

    body = [_axes(left, top, plot_w, plot_h, y_max, days)]
    for i, series in enumerate(timeline):
        points = [p for p in series["points"] if p["rate"] is not None and p["low"] is not None]
        if points:
            body += _series(points, xy, color(i))
        body.append(_legend(left + plot_w + 10, top + 14 * i, series["variant"], color(i)))
    return _svg(width, height, body, "Cumulative conversion rate over time")


def _axes(left: int, top: int, w: int, h: int, y_max: float, days: list[str]) -> str:
    lines = [
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#333"/>',
        _text(left - 4, top + h + 4, "0%", "end"),
        _text(left - 4, top + 4, pct(y_max), "end"),
        _text(left, top + h + 18, days[0]),
    ]
    if len(days) > 1:
        lines.append(_text(left + w, top + h + 18, days[-1], "end"))
    return "".join(lines)


def _series(points: list[Report], xy: Any, stroke: str) -> list[str]:
    upper = [xy(p["day"], p["high"]) for p in points]
    lower = [xy(p["day"], p["low"]) for p in reversed(points)]
    line = [xy(p["day"], p["rate"]) for p in points]
    return [
        f'<polygon points="{" ".join(upper + lower)}" fill="{stroke}" fill-opacity="0.15"/>',
        f'<polyline points="{" ".join(line)}" fill="none" stroke="{stroke}" stroke-width="2"/>',
    ]


def _legend(x: int, y: int, label: str, fill: str) -> str:
    return f'<rect x="{x}" y="{y}" width="10" height="10" fill="{fill}"/>' + _text(
        x + 14, y + 9, label
    )
