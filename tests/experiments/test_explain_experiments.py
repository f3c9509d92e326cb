"""Explain and dry run show the experiment side of the winning strategy, on both databases:
the customer's variant, holdout or place outside the sample, and the split of a sample;
neither records an assignment."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select

from app.experiments.models import Assignment
from tests.conftest import Platform
from tests.experiments.setup import patch_experiment
from tests.experiments.test_patch_experiments import RICH, _expected, _prepare, _send

TEMPLATES = {"short": "wealth_short.sms", "long": "wealth_long.sms"}


async def _explain(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/strategies/explain", json={"scenario": "account_movement", **body}
    )
    assert response.status_code == 200, response.text
    sms: dict[str, Any] = next(c for c in response.json()["channels"] if c["channel"] == "sms")
    return sms


async def _assignment_count(platform: Platform) -> int:
    async with platform.runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Assignment)) or 0)


async def test_explain_names_the_variant_the_holdout_and_the_outside(platform: Platform) -> None:
    client = await _prepare(platform, coverage=0.6)
    expected = _expected(coverage=0.6)
    by_variant = {expected.assign(c): c for c in RICH}
    assert set(by_variant) == {"holdout", "short", "long", None}
    for variant, cid in by_variant.items():
        sms = await _explain(client, customer_id=cid)
        assert sms["strategy"] == "wealth"
        arm = sms["experiment"]
        assert arm["experiment"] == "wealth_copy"
        assert arm["variant"] == variant
        assert arm["in_sample"] is (variant is not None)
        assert arm["holdout"] is (variant == "holdout")
        assert arm["patch_template"] == TEMPLATES.get(variant or "")
        assert (arm["reason"] is None) is (variant is not None)
    assert await _assignment_count(platform) == 0  # explain records nothing
    loan = await _explain(client, customer_id="L1")
    assert loan["strategy"] == "loan"
    assert loan["experiment"] is None
    anonymous = await _explain(client, profile={"aum": 900000})
    assert anonymous["experiment"]["in_sample"] is False
    assert "customer id" in anonymous["experiment"]["reason"]
    inline = await _explain(client, customer_id="NEW1", profile={"aum": 900000})
    assert inline["experiment"]["variant"] == expected.assign("NEW1")
    await client.aclose()


async def test_explain_of_a_full_capped_sample_and_another_channels_variant(
    platform: Platform,
) -> None:
    variants = [*patch_experiment()["variants"][:2]]
    variants.append({"key": "long", "weight": 45, "template": "wealth_mail", "channel": "email"})
    expected = _expected()
    long = next(c for c in RICH if expected.assign(c) == "long")
    size = RICH.index(long) + 1
    client = await _prepare(platform, sample_size=size, variants=variants)
    for cid in RICH[:size]:
        await _send(platform, cid)
    assert await _assignment_count(platform) == size
    inside = await _explain(client, customer_id=RICH[0])
    assert inside["experiment"]["variant"] == expected.assign(RICH[0])
    late = await _explain(client, customer_id=RICH[-1])
    assert late["experiment"]["in_sample"] is False
    assert late["experiment"]["reason"] == "the capped sample is full"
    other = (await _explain(client, customer_id=long))["experiment"]
    assert (other["variant"], other["patch_template"]) == ("long", None)
    assert "email" in other["reason"]
    assert await _assignment_count(platform) == size
    await client.aclose()


async def test_a_dry_run_splits_the_sample_into_variants(platform: Platform) -> None:
    client = await _prepare(platform, coverage=0.6)
    expected = _expected(coverage=0.6)
    response = await client.post(
        "/v1/strategies/dry-run",
        json={"scenario": "account_movement", "segment": "high_net_worth"},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["sampled"] == len(RICH)
    assert result["channels"]["sms"] == {"wealth": len(RICH)}
    split = Counter(expected.assign(c) or "outside_sample" for c in RICH)
    assert result["experiments"] == {"wealth_copy": dict(split)}
    everyone = await client.post("/v1/strategies/dry-run", json={"scenario": "account_movement"})
    assert everyone.json()["experiments"]["wealth_copy"] == dict(split)  # not L1 (loan)
    assert await _assignment_count(platform) == 0
    await client.aclose()


async def test_a_dry_run_fills_a_capped_sample_as_sends_would(platform: Platform) -> None:
    client = await _prepare(platform, sample_size=4)
    await _send(platform, RICH[0])
    response = await client.post(
        "/v1/strategies/dry-run",
        json={"scenario": "account_movement", "segment": "high_net_worth"},
    )
    split = response.json()["experiments"]["wealth_copy"]
    assert split.pop("outside_sample") == len(RICH) - 4
    assert sum(split.values()) == 4
    assert await _assignment_count(platform) == 1
    await client.aclose()
