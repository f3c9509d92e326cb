"""The report endpoints serve abtest's report: JSON numbers equal the reference libraries', the
database's fields, CSV and HTML, 404, 409 on inconsistent counts, drafts and roles."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from scipy.stats import chi2_contingency, chisquare
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from abtest.counts import ArmCounts
from abtest.sequential import sequential_diff
from app.experiments.reporting import experiment_report
from tests.conftest import Platform
from tests.experiments.report_data import T0, arm_rows, assignment, experiment, message, store

URL = "/v1/experiments/exp1/report"
CONVERTED = {"holdout": (20, 200), "sms": (64, 400), "wechat": (30, 380)}


async def load(platform: Platform, **changes: Any) -> None:
    exp = experiment(**changes)
    rows = [r for k, (x, n) in CONVERTED.items() for r in arm_rows(exp, k, n, x)]
    rows.append(message(exp, "sms-000001", "sms", cost="0.05"))
    await store(platform.runtime.sessionmaker, [exp, *rows])


async def get(platform: Platform, path: str, role: str | None = "analyst") -> Any:
    async with platform.client(role) as client:
        return await client.get(path)


def stage(variant: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in variant["stages"] if s["stage"] == name)


def converted_comparisons(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["variant"]: c for c in report["comparisons"] if c["stage"] == "converted"}


async def test_json_numbers_equal_statsmodels(platform: Platform) -> None:
    await load(platform)
    response = await get(platform, URL)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["settings"]["metric"], report["settings"]["confidence"]) == ("converted", 0.95)
    variants = {v["key"]: v for v in report["variants"]}
    assert list(variants) == ["holdout", "sms", "wechat"]
    assert (variants["sms"]["costs"]["total"], variants["sms"]["messages"]) == ("0.0500", 1)
    assert (variants["sms"]["channel"], variants["sms"]["template"]) == ("sms", "t1")
    for key, (x, n) in CONVERTED.items():
        cell = stage(variants[key], "converted")
        assert (cell["count"], stage(variants[key], "assigned")["count"]) == (x, n)
        low, high = proportion_confint(x, n, alpha=0.05, method="wilson")
        assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    comparisons = converted_comparisons(report)
    assert list(comparisons) == ["sms", "wechat"]
    for key, c in comparisons.items():
        x, n = CONVERTED[key]
        z, p = proportions_ztest([x, 20], [n, 200])
        assert (c["test"]["z"], c["test"]["p_value"]) == pytest.approx((z, p), rel=1e-9)
        diff = confint_proportions_2indep(x, n, 20, 200, compare="diff", method="newcomb")
        difference = c["difference"]
        assert (difference["low"], difference["high"]) == pytest.approx(diff, rel=1e-9)
        assert difference["estimate"] == pytest.approx(x / n - 0.1)
        assert c["relative_lift"]["estimate"] == pytest.approx((x / n) / 0.1 - 1)
        cs = sequential_diff(20, 200, x, n, 0.95)
        assert cs is not None
        assert (c["sequential"]["difference_low"], c["sequential"]["p_value"]) == (
            cs.low,
            cs.p_value,
        )
    raw = [comparisons[k]["test"]["p_value"] for k in ("sms", "wechat")]
    holm = multipletests(raw, method="holm")[1]
    adjusted = [comparisons[k]["test"]["p_value_adjusted"] for k in ("sms", "wechat")]
    assert adjusted == pytest.approx(list(holm), rel=1e-9)
    table = [[x, n - x] for x, n in CONVERTED.values()]
    chi2, p_chi, df, _ = chi2_contingency(table, correction=False)
    chi = report["chi_square"]["converted"]
    assert (chi["statistic"], chi["p_value"], chi["df"]) == pytest.approx((chi2, p_chi, df))
    srm = chisquare([200, 400, 380], [980 * 0.2, 980 * 0.4, 980 * 0.4])
    assert report["srm"]["p_value"] == pytest.approx(srm.pvalue, rel=1e-9)
    assert (report["srm"]["df"], report["srm"]["mismatch"]) == (2, False)
    assert report["recommendation"]["kind"] == "no_significant_difference"


async def test_json_has_what_only_the_database_knows(platform: Platform) -> None:
    await load(platform, strategy="wealth", winner="sms", winner_decision={"by": "analyst"})
    report = (await get(platform, URL)).json()
    assert report["lifecycle"] == {
        "status": "running",
        "created_at": T0.isoformat(),
        "started_at": T0.isoformat(),
        "stopped_at": None,
        "completed_at": None,
    }
    setup = report["setup"]
    assert (setup["kind"], setup["segment"], setup["strategy"]) == (
        "campaign",
        "everyone",
        "wealth",
    )
    assert (report["winner"], report["winner_decision"]) == ("sms", {"by": "analyst"})
    assert report["generated_at"].endswith("+00:00")
    assert [p["assigned"] for p in report["timeline"][1]["points"]] == [400]
    page = (await get(platform, URL + ".html")).text
    assert "Status: running; started 2026-11-02T09:30:00+00:00" in page
    assert "Recorded winner: sms (decided by analyst at n/a)" in page


async def test_csv_parses_with_a_row_per_variant_and_stage(platform: Platform) -> None:
    await load(platform)
    response = await get(platform, URL + ".csv", "marketer")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="experiment-exp1-report.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3 * 5
    converted = {r["variant"]: r for r in rows if r["stage"] == "converted"}
    assert (converted["sms"]["count"], converted["sms"]["cost_total"]) == ("64", "0.0500")
    assert float(converted["sms"]["p_value"]) == pytest.approx(
        proportions_ztest([64, 20], [400, 200])[1]
    )
    assert converted["holdout"]["p_value"] == ""


async def test_html_page_has_the_charts_and_the_recommendation(platform: Platform) -> None:
    await load(platform)
    json_report = (await get(platform, URL)).json()
    response = await get(platform, URL + ".html", "admin")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page.count("<svg") >= 3  # funnels, forest plot, timeline
    assert "<table>" in page
    assert "wechat" in page
    reason = json_report["recommendation"]["reason"]
    assert "No significant difference</strong>" in page
    assert reason.split(";")[0] in page
    assert "Cumulative conversion rate over time" in page


async def test_a_draft_experiment_has_a_valid_empty_report(platform: Platform) -> None:
    await store(platform.runtime.sessionmaker, [experiment(status="draft")])
    report = (await get(platform, URL)).json()
    assert [stage(v, "assigned")["count"] for v in report["variants"]] == [0, 0, 0]
    assert stage(report["variants"][1], "converted")["rate"] is None
    assert all(series["points"] == [] for series in report["timeline"])
    assert report["recommendation"]["kind"] == "not_enough_data"
    assert report["lifecycle"]["status"] == "draft"
    assert (await get(platform, URL + ".csv")).status_code == 200
    assert (await get(platform, URL + ".html")).status_code == 200


@pytest.mark.parametrize("suffix", ["", ".csv", ".html"])
async def test_unknown_experiment_is_a_404(platform: Platform, suffix: str) -> None:
    response = await get(platform, f"/v1/experiments/nope/report{suffix}")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


@pytest.mark.parametrize("suffix", ["", ".csv", ".html"])
async def test_inconsistent_counts_are_a_409_not_a_500(platform: Platform, suffix: str) -> None:
    # a message to a customer the experiment has no assignment for: 2 sent of 1 assigned
    exp = experiment()
    rows = [assignment(exp, "c1", "sms"), message(exp, "c1", "sms"), message(exp, "c2", "sms")]
    await store(platform.runtime.sessionmaker, [exp, *rows])
    response = await get(platform, URL + suffix)
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "ReportUnavailable"
    assert "'sms'" in body["detail"]
    assert "assigned" in body["detail"]


async def test_roles(platform: Platform) -> None:
    await load(platform)
    assert (await get(platform, URL, None)).status_code == 401
    assert (await get(platform, URL, "system")).status_code == 403
    assert (await get(platform, URL + ".csv", "system")).status_code == 403
    for role in ("analyst", "marketer", "admin"):
        assert (await get(platform, URL, role)).status_code == 200


def test_empty_arms_give_none_never_nan_and_inconsistent_ones_raise() -> None:
    arms = [ArmCounts("holdout", 0, 0, 0, 0, 0), ArmCounts("wechat", 10, 10, 10, 10, 10)]
    report = experiment_report(experiment(), arms, [], now=T0)
    json.dumps(report, allow_nan=False)
    holdout, sms, _ = report["variants"]
    assert stage(holdout, "converted")["rate"] is None
    assert stage(sms, "assigned")["count"] == 0  # configured but absent: empty
    assert converted_comparisons(report)["wechat"]["test"]["p_value"] is None
    assert report["generated_at"] == T0.isoformat()
    with pytest.raises(ValueError, match="inconsistent counts"):
        experiment_report(experiment(), [ArmCounts("sms", 2, 3, 0, 0, 0)], [], now=T0)


async def test_csv_file_name_is_safe_for_any_key(platform: Platform) -> None:
    await store(platform.runtime.sessionmaker, [experiment('理财 "A"', status="draft")])
    response = await get(platform, '/v1/experiments/理财 "A"/report.csv')
    assert response.status_code == 200
    assert 'filename="experiment-____A_-report.csv"' in response.headers["content-disposition"]
