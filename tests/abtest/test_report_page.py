"""abtest.report_page and abtest.charts: a self-contained, well-formed page with its SVG charts,
escaping user labels and rendering Chinese ones."""

from __future__ import annotations

import re
from datetime import date, timedelta
from html.parser import HTMLParser

import pytest

from abtest.counts import ArmCounts, DailyCounts
from abtest.report import ReportSettings, VariantSettings, build_report
from abtest.report_page import report_html

VOID = {"meta", "br", "img", "hr", "input", "link"}


class StrictParser(HTMLParser):
    """Checks that every element is closed in order (the page is also valid XML-ish SVG)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    check_tables(page)
    return parser


def check_tables(page: str) -> None:
    """Every row of every table has as many cells as its header."""
    for table in re.findall(r"<table>.*?</table>", page, flags=re.S):
        header, *rows = re.findall(r"<tr>.*?</tr>", table, flags=re.S)
        width = header.count("<th>")
        assert width > 1
        assert all(row.count("<td>") == width for row in rows)


def arm(name: str, assigned: int, converted: int) -> ArmCounts:
    delivered = max(0, assigned - 10)
    return ArmCounts(name, assigned, assigned, delivered, min(delivered, converted * 3), converted)


def page_for(names: list[str], arms: list[ArmCounts], daily: list[DailyCounts]) -> str:
    variants = tuple(VariantSettings(n, 1.0, "wechat", "tpl", "card") for n in names)
    settings = ReportSettings("exp-页面", names[0], variants, target_lift=0.2)
    return report_html(build_report(settings, arms, daily))


def daily_for(names: list[str]) -> list[DailyCounts]:
    start = date(2026, 11, 1)
    return [
        DailyCounts(name, start + timedelta(days=d), 500, 40 + 5 * d * i)
        for i, name in enumerate(names)
        for d in range(5)
    ]


def test_page_has_every_chart_and_is_well_formed() -> None:
    names = ["holdout", "sms_short", "wechat_card"]
    arms = [arm("holdout", 2500, 200), arm("sms_short", 2500, 260), arm("wechat_card", 2500, 400)]
    page = page_for(names, arms, daily_for(names))
    parser = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    # one funnel per variant, the forest plot and the timeline
    assert parser.tags.count("svg") == 3 + 2
    assert parser.tags.count("polyline") == 3
    assert "Winner: wechat_card" in page
    for external in ("<script", "src=", "href=", "@import"):
        assert external not in page


def test_user_labels_are_escaped() -> None:
    names = ["<script>alert(1)</script>", 'b" onload="x']
    arms = [arm(names[0], 400, 30), arm(names[1], 400, 35)]
    page = page_for(names, arms, daily_for(names))
    parse(page)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onload="x' not in page


def test_chinese_labels_render() -> None:
    names = ["对照组", "短信优惠"]
    page = page_for(names, [arm(names[0], 300, 20), arm(names[1], 300, 30)], [])
    parser = parse(page)
    text = "".join(parser.text)
    assert "短信优惠" in text
    assert "exp-页面" in text
    page.encode("utf-8")


@pytest.mark.parametrize(
    "arms",
    [
        [arm("c", 0, 0), arm("b", 0, 0)],
        [arm("c", 500, 0), arm("b", 500, 0)],
        [arm("c", 20, 20), arm("b", 20, 1)],
        [arm("c", 20, 0)],
    ],
)
def test_edge_cases_render(arms: list[ArmCounts]) -> None:
    page = page_for(["c", "b"], arms, [])
    parse(page)
    assert "n/a" in page or "undefined" in page or "No daily data" in page


def test_single_arm_renders() -> None:
    page = page_for(["only"], [arm("only", 100, 5)], daily_for(["only"]))
    parse(page)
    assert "No variant to compare" in page
