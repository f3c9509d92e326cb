"""End to end, as a bank would use it, on both databases: an A/B experiment -> a campaign on a
sample of a segment -> simulated deliveries, clicks and conversions -> the report's counts
equal what was simulated, and its statistics equal statsmodels' and scipy's.

Everything goes through the HTTP API, except the SMS and email provider accounts: they are
swapped for providers that learn delivery from receipts posted to /v1/callbacks/{provider}
(as real SMS gateways do), with a price per message so that the report's costs are checked.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import httpx
import pytest
from scipy.stats import chi2_contingency, chisquare
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from abtest.assignment import Assigner, Variant
from app.timeutil import utcnow
from channels.base import ProviderContext
from tests.ab_e2e_sim import Simulation, Tally, message_pages
from tests.conftest import Platform
from tests.providers import ReportingProvider

SEGMENT_SIZE = 600
OUTSIDERS = 10  # customers outside the segment
OPTED_OUT = ("P00007", "P00042", "P00123", "P00300", "P00451", "P00599")
PRICES = {"sms": Decimal("0.045"), "email": Decimal("0.002")}
OFFER = "https://bank.example/offer?p=1"
SCENARIO: dict[str, Any] = {
    "key": "card_offer",
    "class": "marketing",
    "channels": ["sms", "email"],
    "required_variables": [{"name": "product", "type": "string"}],
    "templates": {
        "sms": {"body": "【示例银行】{{ product }}限时办理 " + OFFER},
        "email": {"subject": "{{ product }}", "body": "{{ product }} " + OFFER},
    },
}
SMS_SHORT = {"body": "【示例银行】{{ product }}，点此办理 " + OFFER + " 拒收请回复R"}
EMAIL_HTML = {
    "subject": "{{ product }}限时办理",
    "body": "{{ product }}限时办理：" + OFFER,
    "html": f'<html><body><p>{{{{ product }}}}</p><a href="{OFFER}">立即办理</a></body></html>',
}
VARIANTS: list[dict[str, Any]] = [
    {"key": "sms_short", "weight": 20, "channel": "sms", "template": "offer_short.sms"},
    {"key": "email_html", "weight": 40, "channel": "email", "template": "offer_html.email"},
    {"key": "holdout", "weight": 40, "holdout": True},
]
EXPERIMENT: dict[str, Any] = {
    "key": "card_channels",
    "kind": "campaign",
    "segment": "card_promo",
    "variants": VARIANTS,
    "coverage": 0.8,
    "salt": "card-channels-2026",
    "metric": "converted",
    "conversion_event": "card_apply",
    "attribution_hours": 72,
    "min_sample": 50,
}
KEYS = [v["key"] for v in VARIANTS]  # the configured order: the report's
CSV_HEADERS = {"Content-Type": "text/csv; charset=utf-8"}
STAGES = ("assigned", "sent", "delivered", "clicked", "converted")


def customers_csv() -> str:
    lines = ["id,name,phone,email,tags,tier"]
    for n in range(SEGMENT_SIZE):
        lines.append(f"P{n:05d},张伟,139{n:08d},p{n}@example.com,card_promo|payroll,mass")
    for n in range(OUTSIDERS):
        lines.append(f"Q{n:05d},李娜,137{n:08d},q{n}@example.com,payroll,mass")
    return "\n".join(lines) + "\n"


def _ok(response: httpx.Response, *codes: int) -> dict[str, Any]:
    assert response.status_code in (codes or (200, 201)), response.text
    body: dict[str, Any] = response.json()
    return body


async def _template(
    client: httpx.AsyncClient, key: str, channel: str, content: dict[str, Any]
) -> None:
    body = {"key": key, "channel": channel, "content": content, "variables": [{"name": "product"}]}
    _ok(await client.post("/v1/templates", json=body), 201)
    _ok(await client.post(f"/v1/templates/{key}/versions/1/publish"))


async def declare_bank(platform: Platform) -> None:
    """Attributes, customers (CSV import), opt-outs, the segment, scenario and templates."""
    async with platform.client("marketer") as client:
        _ok(await client.put("/v1/customer-attributes/tier", json={"type": "string"}))
        imported = await client.post(
            "/v1/customers/import", content=customers_csv().encode(), headers=CSV_HEADERS
        )
        summary = _ok(imported)
        assert (summary["inserted"], summary["failed"]) == (SEGMENT_SIZE + OUTSIDERS, 0)
        for cid in OPTED_OUT:
            _ok(await client.post(f"/v1/customers/{cid}/opt-out", json={}))
        rule = {"field": "tags", "op": "contains", "value": "card_promo"}
        _ok(await client.post("/v1/segments", json={"key": "card_promo", "rule": rule}), 201)
        _ok(await client.post("/v1/scenarios", json=SCENARIO), 201)
        await _template(client, "offer_short.sms", "sms", SMS_SHORT)
        await _template(client, "offer_html.email", "email", EMAIL_HTML)


def reporting_providers(platform: Platform) -> None:
    """SMS and email through providers that report delivery by callback, at a price."""
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    for channel, price in PRICES.items():
        platform.runtime.providers.replace(channel, [ReportingProvider(channel, context)])
        slot = platform.runtime.providers.slot(f"reporting-{channel}")
        assert slot is not None
        slot.account = slot.account.model_copy(update={"cost": price})


async def run_campaign(platform: Platform) -> dict[str, Any]:
    """Start the experiment, then a campaign with it; wait for the runner and the sends."""
    async with platform.client("marketer") as client:
        _ok(await client.post("/v1/experiments", json=EXPERIMENT), 201)
        _ok(await client.post("/v1/experiments/card_channels/start"))
        body = {
            "key": "card_autumn",
            "scenario": "card_offer",
            "segment": "card_promo",
            "experiment": "card_channels",
            "variables": {"product": "白金信用卡"},
            "respect_quiet_hours": False,
        }
        _ok(await client.post("/v1/campaigns", json=body), 201)
        _ok(await client.post("/v1/campaigns/card_autumn/start"))
        campaign: dict[str, Any] = await _poll(client, "/v1/campaigns/card_autumn", _campaign_done)
    async with platform.client("analyst") as reader:
        await _poll(reader, campaign["id"], _all_sent, pages=True)
    return campaign


def _campaign_done(body: dict[str, Any]) -> bool:
    assert body["status"] in ("scheduled", "running", "completed"), body
    return bool(body["status"] == "completed")


def _all_sent(items: list[dict[str, Any]]) -> bool:
    assert all(m["status"] not in ("failed", "delivered") for m in items), items
    return all(m["status"] == "sent" for m in items)


async def _poll(
    client: httpx.AsyncClient, what: str, done: Callable[[Any], bool], *, pages: bool = False
) -> Any:
    deadline = asyncio.get_running_loop().time() + 20.0
    while True:
        body = await message_pages(client, what) if pages else _ok(await client.get(what))
        if done(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"not done: {what}"
        await asyncio.sleep(0.1)


def expected_assignment() -> dict[str, str]:
    """What the hash assigns, over the segment's customers only."""
    variants = [Variant(v["key"], float(v["weight"])) for v in EXPERIMENT["variants"]]
    assigner = Assigner(salt=EXPERIMENT["salt"], variants=variants, coverage=0.8)
    ids = [f"P{n:05d}" for n in range(SEGMENT_SIZE)]
    return {cid: key for cid in ids if (key := assigner.assign(cid)) is not None}


async def test_experiment_report_equals_what_was_simulated(platform: Platform) -> None:
    reporting_providers(platform)
    await declare_bank(platform)
    started = utcnow()
    campaign = await run_campaign(platform)
    assigned = expected_assignment()
    assert campaign["held_out"] == sum(v == "holdout" for v in assigned.values())
    refused = sum(c in assigned and assigned[c] != "holdout" for c in OPTED_OUT)
    assert campaign["skipped"] == refused > 0  # assigned, not sent: still in the report
    async with platform.client("analyst") as reader:
        listed = await _assignments(reader)
    assert listed == assigned
    assert campaign["sent"] + campaign["skipped"] + campaign["held_out"] == len(assigned)

    simulation = Simulation(platform, assigned, random.Random(20261123), PRICES)
    await simulation.load_messages(campaign["id"])
    tallies = await simulation.run(before=started - timedelta(hours=3))
    assert {k for k, t in tallies.items() if t.stage("converted")} == set(KEYS)

    await simulation.check_messages(campaign["id"])
    async with platform.client("marketer") as client:  # the analysis outlives the test
        _ok(await client.post("/v1/experiments/card_channels/stop"))
        done = {"winner": "email_html"}
        _ok(await client.post("/v1/experiments/card_channels/complete", json=done))
    async with platform.client("analyst") as reader:
        report = _ok(await reader.get("/v1/experiments/card_channels/report"))
        csv_text = (await reader.get("/v1/experiments/card_channels/report.csv")).text
        page = await reader.get("/v1/experiments/card_channels/report.html")
    assert (report["lifecycle"]["status"], report["winner"]) == ("completed", "email_html")
    check_counts(report, tallies)
    check_costs(report, tallies)
    check_timeline(report, tallies)
    check_statistics(report, tallies)
    check_csv(csv_text, report, tallies)
    assert page.status_code == 200, page.text
    assert "<svg" in page.text


async def _assignments(client: httpx.AsyncClient) -> dict[str, str]:
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = _ok(await client.get("/v1/experiments/card_channels/assignments", params=params))
        found |= {a["customer_id"]: a["variant"] for a in page["items"]}
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def check_counts(report: dict[str, Any], tallies: dict[str, Tally]) -> None:
    assert [v["key"] for v in report["variants"]] == KEYS
    for variant in report["variants"]:
        tally = tallies[variant["key"]]
        counts = {s["stage"]: s["count"] for s in variant["stages"]}
        assert counts == {stage: tally.stage(stage) for stage in STAGES}, variant["key"]
        assert variant["messages"] == tally.messages
        assert Decimal(variant["value"]) == tally.value
        assert Decimal(variant["costs"]["total"]) == tally.cost
        per_message = variant["costs"]["per_message"]
        price = PRICES.get(str(variant["channel"]))
        assert (per_message and Decimal(per_message)) == (price if tally.messages else None)


def _money(amount: Fraction) -> Decimal:
    """Exactly, then to 4 places half up (abtest/costs.py: what a finance team expects)."""
    exact = Decimal(amount.numerator) / Decimal(amount.denominator)
    return exact.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _per(cost: Decimal, count: int) -> Decimal | None:
    return _money(Fraction(cost) / count) if count else None


def check_costs(report: dict[str, Any], tallies: dict[str, Tally]) -> None:
    """Unit costs from the providers' prices; incremental conversions against the holdout."""
    control = tallies["holdout"]
    control_rate = Fraction(control.stage("converted"), control.stage("assigned"))
    for variant in report["variants"]:
        tally = tallies[variant["key"]]
        found = variant["costs"]
        decimals = {k: None if v is None else Decimal(v) for k, v in found.items()}
        del decimals["incremental_conversions"]
        expected: dict[str, Decimal | None] = {
            "total": _money(Fraction(tally.cost)),
            "per_message": _per(tally.cost, tally.messages),
            "per_sent": _per(tally.cost, tally.stage("sent")),
            "per_delivered": _per(tally.cost, tally.stage("delivered")),
            "per_conversion": _per(tally.cost, tally.stage("converted")),
            "per_incremental_conversion": None,
        }
        if variant["key"] == "holdout":
            assert found["incremental_conversions"] is None
        else:
            rate = Fraction(tally.stage("converted"), tally.stage("assigned"))
            incremental = (rate - control_rate) * tally.stage("assigned")
            assert found["incremental_conversions"] == _approx(float(incremental))
            assert incremental > 0
            expected["per_incremental_conversion"] = _money(Fraction(tally.cost) / incremental)
        assert decimals == expected, variant["key"]


def check_timeline(report: dict[str, Any], tallies: dict[str, Tally]) -> None:
    """Everything happened today (UTC): one cumulative point per variant, the totals."""
    assert [s["variant"] for s in report["timeline"]] == KEYS
    for series in report["timeline"]:
        tally = tallies[series["variant"]]
        [point] = series["points"]
        assigned, converted = tally.stage("assigned"), tally.stage("converted")
        assert (point["assigned"], point["converted"]) == (assigned, converted)
        low, high = proportion_confint(converted, assigned, alpha=0.05, method="wilson")
        assert (point["low"], point["high"]) == (_approx(low), _approx(high))


def _approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-12)


def check_statistics(report: dict[str, Any], tallies: dict[str, Tally]) -> None:
    """Wilson per arm and stage; Newcombe, z test and Holm against the control; chi-square
    across arms; SRM against the weights: as statsmodels and scipy compute them."""
    confidence = report["settings"]["confidence"]
    alpha = 1 - confidence
    for variant in report["variants"]:
        n = tallies[variant["key"]].stage("assigned")
        for stage in variant["stages"]:
            low, high = proportion_confint(stage["count"], n, alpha=alpha, method="wilson")
            assert (stage["ci_low"], stage["ci_high"]) == (_approx(low), _approx(high))
    control = tallies["holdout"]
    for stage in ("sent", "delivered", "clicked", "converted"):
        rows = [c for c in report["comparisons"] if c["stage"] == stage]
        assert [r["variant"] for r in rows] == KEYS[:-1]
        p_values = [_compare(row, control, tallies[row["variant"]], alpha) for row in rows]
        adjusted = multipletests(p_values, method="holm")[1]
        assert [r["test"]["p_value_adjusted"] for r in rows] == [_approx(p) for p in adjusted]
        _chi_square(report["chi_square"][stage], [tallies[k] for k in KEYS], stage)
    weights = [float(v["weight"]) for v in EXPERIMENT["variants"]]
    counts = [tallies[k].stage("assigned") for k in KEYS]
    expected = [sum(counts) * w / sum(weights) for w in weights]
    statistic, p_value = chisquare(counts, f_exp=expected)
    assert (report["srm"]["statistic"], report["srm"]["p_value"]) == (
        _approx(statistic),
        _approx(p_value),
    )
    assert report["srm"]["mismatch"] is False
    assert report["power"]["metric"] == "converted"


def _compare(row: dict[str, Any], control: Tally, arm: Tally, alpha: float) -> float:
    stage = row["stage"]
    x_c, n_c = control.stage(stage), control.stage("assigned")
    x_t, n_t = arm.stage(stage), arm.stage("assigned")
    low, high = confint_proportions_2indep(
        x_t, n_t, x_c, n_c, compare="diff", method="newcomb", alpha=alpha
    )
    difference = row["difference"]
    assert difference["estimate"] == _approx(x_t / n_t - x_c / n_c)
    assert (difference["low"], difference["high"]) == (_approx(low), _approx(high))
    z, p_value = proportions_ztest([x_c, x_t], [n_c, n_t])
    assert (row["test"]["z"], row["test"]["p_value"]) == (_approx(-z), _approx(p_value))
    return float(p_value)


def _chi_square(found: dict[str, Any], arms: list[Tally], stage: str) -> None:
    table = [
        [a.stage(stage) for a in arms],
        [a.stage("assigned") - a.stage(stage) for a in arms],
    ]
    statistic, p_value, df, _ = chi2_contingency(table, correction=False)
    assert (found["statistic"], found["p_value"], found["df"]) == (
        _approx(statistic),
        _approx(p_value),
        df,
    )


def check_csv(text: str, report: dict[str, Any], tallies: dict[str, Tally]) -> None:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(KEYS) * len(STAGES)
    found = {(r["variant"], r["stage"]): int(r["count"]) for r in rows}
    assert found == {(k, s): tallies[k].stage(s) for k in KEYS for s in STAGES}
    stages = {(v["key"], s["stage"]): s for v in report["variants"] for s in v["stages"]}
    compared = {(c["variant"], c["stage"]): c for c in report["comparisons"]}
    for row in rows:
        stage = stages[row["variant"], row["stage"]]
        for column in ("rate", "ci_low", "ci_high"):
            assert float(row[column]) == stage[column]
        comparison = compared.get((row["variant"], row["stage"]))
        if comparison is not None and comparison["test"]["p_value"] is not None:
            assert float(row["p_value"]) == comparison["test"]["p_value"]
