"""The report endpoints: JSON numbers equal the reference libraries', CSV and HTML, 404,
draft experiments and roles."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from abtest.counts import ArmCounts
from app.experiments.reporting import build_report
from tests.conftest import Platform
from tests.experiments.report_data import T0, arm_rows, experiment, message, store

URL = "/v1/experiments/exp1/report"


async def load(platform: Platform, **changes: Any) -> None:
    exp = experiment(**changes)
    rows = [*arm_rows(exp, "holdout", 200, 20), *arm_rows(exp, "sms", 400, 64)]
    rows += [*arm_rows(exp, "wechat", 380, 30), message(exp, "sms-000001", "sms", cost="0.05")]
    await store(platform.runtime.sessionmaker, [exp, *rows])


async def get(platform: Platform, path: str, role: str | None = "analyst") -> Any:
    async with platform.client(role) as client:
        return await client.get(path)


async def test_json_numbers_equal_statsmodels(platform: Platform) -> None:
    await load(platform)
    response = await get(platform, URL)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["settings"]["metric"] == "converted"
    assert report["settings"]["confidence"] == 0.95
    arms = {a["variant"]: a for a in report["arms"]}
    assert arms["sms"]["cost"] == "0.050000"
    assert arms["sms"]["messages"] == 1
    for variant, (x, n) in {"holdout": (20, 200), "sms": (64, 400), "wechat": (30, 380)}.items():
        cell = arms[variant]["stages"]["converted"]
        low, high = proportion_confint(x, n, alpha=0.05, method="wilson")
        assert (cell["count"], cell["trials"]) == (x, n)
        assert cell["ci_low"] == pytest.approx(low, rel=1e-9)
        assert cell["ci_high"] == pytest.approx(high, rel=1e-9)
        if variant == "holdout":
            assert cell["vs_control"] is None
            continue
        versus = cell["vs_control"]
        z, p = proportions_ztest([x, 20], [n, 200])
        assert versus["z"] == pytest.approx(z, rel=1e-9)
        assert versus["p_value"] == pytest.approx(p, rel=1e-9)
        diff = confint_proportions_2indep(x, n, 20, 200, compare="diff", method="newcomb")
        assert (versus["ci_low"], versus["ci_high"]) == pytest.approx(diff, rel=1e-9)
        assert versus["difference"] == pytest.approx(x / n - 0.1)
    assert report["srm"]["df"] == 2
    assert report["srm"]["mismatch"] is False
    assert [c["variant"] for c in report["sequential"]["comparisons"]] == ["sms", "wechat"]


async def test_csv_parses_with_a_row_per_variant_and_stage(platform: Platform) -> None:
    await load(platform)
    response = await get(platform, URL + ".csv", "marketer")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="experiment-exp1-report.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3 * 5
    converted = {r["variant"]: r for r in rows if r["stage"] == "converted"}
    assert (converted["sms"]["count"], converted["sms"]["trials"]) == ("64", "400")
    assert float(converted["sms"]["p_value"]) == pytest.approx(
        proportions_ztest([64, 20], [400, 200])[1]
    )
    assert converted["holdout"]["p_value"] == ""


async def test_html_page(platform: Platform) -> None:
    await load(platform)
    response = await get(platform, URL + ".html", "admin")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<table" in response.text
    assert "wechat" in response.text


async def test_a_draft_experiment_has_a_valid_empty_report(platform: Platform) -> None:
    await store(platform.runtime.sessionmaker, [experiment(status="draft")])
    report = (await get(platform, URL)).json()
    assert [a["stages"]["assigned"]["count"] for a in report["arms"]] == [0, 0, 0]
    assert report["arms"][1]["stages"]["converted"]["rate"] is None
    assert report["daily"] == []
    assert report["sequential"]["winner"] is None
    assert (await get(platform, URL + ".csv")).status_code == 200
    assert (await get(platform, URL + ".html")).status_code == 200


@pytest.mark.parametrize("suffix", ["", ".csv", ".html"])
async def test_unknown_experiment_is_a_404(platform: Platform, suffix: str) -> None:
    response = await get(platform, f"/v1/experiments/nope/report{suffix}")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


async def test_roles(platform: Platform) -> None:
    await load(platform)
    assert (await get(platform, URL, None)).status_code == 401
    assert (await get(platform, URL, "system")).status_code == 403
    assert (await get(platform, URL + ".csv", "system")).status_code == 403
    for role in ("analyst", "marketer", "admin"):
        assert (await get(platform, URL, role)).status_code == 200


def test_empty_or_inconsistent_counts_give_none_never_nan() -> None:
    arms = [
        ArmCounts("holdout", 0, 0, 0, 0, 0),
        ArmCounts("sms", 2, 3, 0, 0, 5),  # more converted than assigned: rows disagree
        ArmCounts("wechat", 10, 10, 10, 10, 10),
    ]
    report = build_report(experiment(), arms, [], now=T0)
    json.dumps(report, allow_nan=False)
    holdout, sms, wechat = report["arms"]
    assert holdout["stages"]["converted"]["rate"] is None
    assert sms["stages"]["sent"] == {
        "count": 3,
        "trials": 2,
        "rate": None,
        "ci_low": None,
        "ci_high": None,
        "vs_control": None,
    }
    assert wechat["stages"]["converted"]["vs_control"]["p_value"] is None
    assert report["sequential"]["winner"] is None


async def test_csv_file_name_is_safe_for_any_key(platform: Platform) -> None:
    await store(platform.runtime.sessionmaker, [experiment('理财 "A"', status="draft")])
    response = await get(platform, '/v1/experiments/理财 "A"/report.csv')
    assert response.status_code == 200
    assert 'filename="experiment-____A_-report.csv"' in response.headers["content-disposition"]
