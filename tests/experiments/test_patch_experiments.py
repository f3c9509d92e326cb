"""Patch experiments end to end through `POST /v1/messages` and the batch endpoint, on both
databases: the strategy's customers are split by the hash, the holdout gets no patch, the
assignment is sticky and recorded once, and a stopped or completed experiment behaves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import event, func, select

from abtest.assignment import Assigner, Variant
from app.experiments import patching
from app.experiments.models import Assignment
from app.messages import bulk_pg
from app.messages.models import Message
from app.messages.schemas import MessageCreate
from app.messages.service import AcceptRequest, accept_many
from tests.conftest import VARIABLES, Platform
from tests.experiments.setup import customer, patch_experiment, setup

RICH = [f"H{i:02d}" for i in range(30)]
PATCHES = {"short": "理财短文案", "long": "理财长文案：稳健增值", None: "稳健理财年化3.2%"}


def _outside_quiet_hours(platform: Platform) -> None:
    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    marketing = platform.runtime.settings.marketing
    marketing.quiet_hours_start = (local + timedelta(hours=2)).strftime("%H:00")
    marketing.quiet_hours_end = (local + timedelta(hours=3)).strftime("%H:00")


async def _prepare(platform: Platform, **experiment: Any) -> httpx.AsyncClient:
    _outside_quiet_hours(platform)
    client = platform.client("marketer")
    await setup(platform, client)
    for i, cid in enumerate(RICH):
        await customer(client, cid, 800_000, f"138{i:08d}")
    await customer(client, "L1", 1000, "13900000001")
    created = await client.post("/v1/experiments", json=patch_experiment(**experiment))
    assert created.status_code == 201, created.text
    started = await client.post(f"/v1/experiments/{created.json()['key']}/start")
    assert started.status_code == 200, started.text
    return client


def _expected(coverage: float = 1.0, salt: str = "wealth_copy") -> Assigner:
    variants = [Variant("holdout", 10.0), Variant("short", 45.0), Variant("long", 45.0)]
    return Assigner(salt=salt, variants=variants, coverage=coverage)


async def _send(platform: Platform, cid: str, **extra: Any) -> dict[str, Any]:
    body = {"scenario": "account_movement", "customer_id": cid, "variables": VARIABLES, **extra}
    async with platform.client("system") as client:
        accepted = await client.post("/v1/messages", json=body)
        assert accepted.status_code == 202, accepted.text
        message = await client.get(f"/v1/messages/{accepted.json()['id']}")
    result: dict[str, Any] = message.json()
    return result


async def _rows(platform: Platform) -> dict[str, list[tuple[str | None, str | None]]]:
    """customer id -> (experiment id, variant) of each of its messages."""
    async with platform.runtime.sessionmaker() as session:
        rows = await session.execute(
            select(Message.customer_id, Message.experiment_id, Message.variant).order_by(Message.id)
        )
        found: dict[str, list[tuple[str | None, str | None]]] = {}
        for cid, experiment_id, variant in rows:
            found.setdefault(cid, []).append((experiment_id, variant))
        return found


async def _assignments(platform: Platform) -> dict[str, str]:
    async with platform.runtime.sessionmaker() as session:
        rows = await session.execute(select(Assignment.customer_id, Assignment.variant))
        listed = [(c, v) for c, v in rows]
    assert len(listed) == len({c for c, _ in listed})  # once per customer
    return dict(listed)


def _check_content(message: dict[str, Any], variant: str | None) -> None:
    body = message["content"]["sms"]["body"]
    sms = message["decision"]["patch"]["sms"]
    if variant == "holdout":
        assert "拒收" not in body
        assert sms["composition"] == {"applied": False, "reason": "holdout"}
        assert message["decision"]["strategy"] is None
    else:
        assert PATCHES[variant] in body, (variant, body)
        assert sms["composition"]["applied"] is True
        assert message["decision"]["strategy"] == "wealth"
    for other in set(PATCHES) - {variant}:
        if other is not None and PATCHES[other] not in PATCHES.get(variant, ""):
            assert PATCHES[other] not in body


async def test_customers_are_split_by_the_hash_and_stay(platform: Platform) -> None:
    client = await _prepare(platform)
    expected = _expected()
    experiment = (await client.get("/v1/experiments/wealth_copy")).json()
    for _ in range(2):  # the second round: sticky
        for cid in RICH:
            message = await _send(platform, cid)
            variant = expected.assign(cid)
            assert message["decision"]["experiment"] == "wealth_copy"
            assert message["decision"]["variant"] == variant
            assert message["experiment_id"] == experiment["id"]
            assert (message["experiment"], message["variant"]) == ("wealth_copy", variant)
            _check_content(message, variant)
    assert {expected.assign(c) for c in RICH} == {"holdout", "short", "long"}
    loan = await _send(platform, "L1")  # another strategy: no experiment
    assert "experiment" not in loan["decision"]
    assert (loan["experiment_id"], loan["experiment"], loan["variant"]) == (None, None, None)
    rows = await _rows(platform)
    for cid in RICH:
        assert rows[cid] == [(experiment["id"], expected.assign(cid))] * 2
    assert rows["L1"] == [(None, None)]
    assert await _assignments(platform) == {c: expected.assign(c) for c in RICH}
    async with platform.client("analyst") as reader:
        page = (await reader.get("/v1/experiments/wealth_copy/assignments?limit=7")).json()
        assert [a["customer_id"] for a in page["items"]] == RICH[:7]
        assert page["next_cursor"] is not None
        holdouts = await reader.get("/v1/experiments/wealth_copy/assignments?variant=holdout")
        assert {a["customer_id"] for a in holdouts.json()["items"]} == {
            c for c in RICH if expected.assign(c) == "holdout"
        }
        one = (await reader.get("/v1/experiments/wealth_copy/assignments/H03")).json()
        assert one["variant"] == expected.assign("H03")
        assert datetime.fromisoformat(one["assigned_at"]).utcoffset() is not None
    await client.aclose()


async def test_an_inline_profile_is_assigned_by_customer_id(platform: Platform) -> None:
    client = await _prepare(platform)
    await client.aclose()
    expected = _expected()
    for cid in ("X1", "X2", "X3", "X4", "X5"):
        message = await _send(
            platform, cid, profile={"aum": 900000}, recipient={"phone": "13700000000"}
        )
        assert message["decision"]["variant"] == expected.assign(cid)
        _check_content(message, expected.assign(cid))
    assert set(await _assignments(platform)) == {"X1", "X2", "X3", "X4", "X5"}


async def test_outside_the_coverage_the_strategy_patches(platform: Platform) -> None:
    client = await _prepare(platform, coverage=0.3)
    await client.aclose()
    expected = _expected(coverage=0.3)
    outside = [c for c in RICH if expected.assign(c) is None]
    assert outside
    assert len(outside) < len(RICH)
    for cid in RICH:
        message = await _send(platform, cid)
        _check_content(message, expected.assign(cid))
        if cid in outside:
            assert "experiment" not in message["decision"]
    rows = await _rows(platform)
    assert all(rows[c] == [(None, None)] for c in outside)
    assert set(await _assignments(platform)) == set(RICH) - set(outside)


async def test_stopped_and_completed_experiments(platform: Platform) -> None:
    client = await _prepare(platform)
    assert (await client.post("/v1/experiments/wealth_copy/stop")).status_code == 200
    for cid in RICH[:6]:
        message = await _send(platform, cid)
        _check_content(message, None)  # the strategy's own patch
        assert "experiment" not in message["decision"]
    done = await client.post("/v1/experiments/wealth_copy/complete", json={"winner": "long"})
    assert done.status_code == 200
    for cid in RICH[:6]:
        message = await _send(platform, cid)
        _check_content(message, "long")
        assert message["decision"]["variant"] == "long"
        assert message["decision"]["rollout"] is True
    await client.aclose()


async def test_a_rolled_out_winner_leaves_the_report_as_assigned(platform: Platform) -> None:
    """After the winner is chosen, every customer gets its patch, but the messages count in
    no arm: the report still compares the arms as assigned (rollout messages credited to the
    winner made it larger than its assigned count, and the report was refused for good)."""
    client = await _prepare(platform)
    for cid in RICH:
        await _send(platform, cid)
    assigned = await _assignments(platform)
    done = await client.post("/v1/experiments/wealth_copy/complete", json={"winner": "long"})
    assert done.status_code == 200
    for cid in RICH:
        _check_content(await _send(platform, cid), "long")
    assert await _assignments(platform) == assigned
    rows = await _rows(platform)
    assert all(rows[cid][-1] == (None, None) for cid in RICH)  # the rollout's messages
    report = await client.get("/v1/experiments/wealth_copy/report")
    assert report.status_code == 200, report.text
    await client.aclose()


async def test_a_capped_sample_takes_no_new_customers(platform: Platform) -> None:
    client = await _prepare(platform, sample_size=5)
    await client.aclose()
    expected = _expected()
    for cid in RICH:
        await _send(platform, cid)
    assigned = await _assignments(platform)
    assert list(assigned) == RICH[:5]  # the first five, in the order they came
    again = await _send(platform, "H02")
    assert again["decision"]["variant"] == expected.assign("H02")
    late = await _send(platform, "H20")
    _check_content(late, None)


# several processes accept at once on PostgreSQL; a SQLite file has one (its groups share
# the sample's count in memory)
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_groups_accepted_at_once_do_not_overshoot_a_capped_sample(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two groups accepted at the same time, each loading the sample's size as its own
    process would (nothing cached between them), fill a sample of 5 with 5 customers, not
    5 each: on PostgreSQL the second waits for the first to commit and counts again."""
    client = await _prepare(platform, sample_size=5)
    await client.aclose()
    monkeypatch.setattr(patching, "CACHE_SECONDS", -1.0)  # every group loads afresh
    runtime = platform.runtime

    async def group(customer_ids: list[str]) -> None:
        requests = [
            AcceptRequest(
                "account_movement",
                "core",
                MessageCreate.model_validate(
                    {"scenario": "account_movement", "customer_id": cid, "variables": VARIABLES}
                ),
                None,
            )
            for cid in customer_ids
        ]
        async with runtime.sessionmaker() as session:
            await accept_many(session, requests, queue=runtime.queue, settings=runtime.settings)
            await asyncio.sleep(0.3)  # still uncommitted while the other group decides
            await session.commit()

    await asyncio.gather(group(RICH[:15]), group(RICH[15:]))
    assigned = await _assignments(platform)
    assert len(assigned) == 5, assigned


async def test_a_join_rolled_back_does_not_fill_a_capped_sample(platform: Platform) -> None:
    """4 of a sample of 5 are in; a group that joined the 5th rolls back. The sample is not
    full: the next customer joins it (the count in memory said 5)."""
    client = await _prepare(platform, sample_size=5)
    await client.aclose()
    for cid in RICH[:4]:
        await _send(platform, cid)
    runtime = platform.runtime
    body = {"scenario": "account_movement", "customer_id": RICH[4], "variables": VARIABLES}
    request = AcceptRequest("account_movement", "core", MessageCreate.model_validate(body), None)
    async with runtime.sessionmaker() as session:
        await accept_many(session, [request], queue=runtime.queue, settings=runtime.settings)
        await session.rollback()
    late = await _send(platform, RICH[5])
    assert late["decision"]["variant"] == _expected().assign(RICH[5])
    assert set(await _assignments(platform)) == {*RICH[:4], RICH[5]}


@pytest.fixture
def copy_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches take the PostgreSQL COPY path."""
    monkeypatch.setattr(bulk_pg, "MIN_ROWS", 1)


async def test_a_variant_of_another_channel_keeps_the_strategys_patch(
    platform: Platform,
) -> None:
    """ "long" changes the email patch only; these customers get SMS: the strategy's patch,
    while the message still counts for its variant."""
    variants = [*patch_experiment()["variants"][:2]]
    variants.append({"key": "long", "weight": 45, "template": "wealth_mail", "channel": "email"})
    client = await _prepare(platform, variants=variants)
    await client.aclose()
    expected = _expected()
    for cid in RICH[:12]:
        message = await _send(platform, cid)
        variant = expected.assign(cid)
        assert message["decision"]["variant"] == variant
        _check_content(message, None if variant == "long" else variant)


@pytest.mark.usefixtures("copy_everything")
async def test_a_batch_is_split_and_recorded(platform: Platform) -> None:
    client = await _prepare(platform)
    await client.aclose()
    expected = _expected()
    items = [{"customer_id": c, "variables": VARIABLES} for c in [*RICH, *RICH[:5], "L1"]]
    async with platform.client("system") as sender:
        response = await sender.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == len(items)
        ids = [item["id"] for item in response.json()["items"]]
        for cid, message_id in zip([*RICH, *RICH[:5]], ids, strict=False):
            message = (await sender.get(f"/v1/messages/{message_id}")).json()
            _check_content(message, expected.assign(cid))
    rows = await _rows(platform)
    for cid in RICH:
        variant = expected.assign(cid)
        assert {v for _, v in rows[cid]} == {variant}
    assert rows["L1"] == [(None, None)]
    assert await _assignments(platform) == {c: expected.assign(c) for c in RICH}
    async with platform.runtime.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(Message))
    assert count == len(items)


def _experiment_reads(statements: list[str]) -> list[str]:
    """Statements on the experiment tables (not the messages' experiment_id column)."""
    return [s for s in statements if " experiments" in s or "experiment_assignments" in s]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_no_experiment_costs_no_query(platform: Platform) -> None:
    """Without a live experiment for the scenario's strategies, a send (cache warm) reads
    no experiment table; without strategies, not even on a cold cache."""
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await setup(platform, client)
        await customer(client, "H00", 800_000, "13800000000")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = platform.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        await _send(platform, "H00")  # loads the (empty) cache of live experiments
        assert _experiment_reads(statements)
        statements.clear()
        message = await _send(platform, "H00")
        _check_content(message, None)
        assert not _experiment_reads(statements)
        await platform.create_scenario(key="salary_credit")
        patching.clear_cache()
        statements.clear()
        await _send(platform, "H00", scenario="salary_credit")
        assert not _experiment_reads(statements)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
