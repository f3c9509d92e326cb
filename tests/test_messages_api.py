"""The send API: validation, idempotency, batches, reading back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from app.experiments.models import Experiment
from app.messages.models import Message
from tests.conftest import PHONE, SCENARIO, VARIABLES, Platform, count_messages, send_body


async def test_validation_errors_name_the_field(platform: Platform) -> None:
    await platform.create_scenario()
    cases: list[tuple[dict[str, Any], int, str]] = [
        (send_body(scenario="nope"), 404, "NotFound"),
        (send_body(variables={"account_tail": "1234"}), 422, "variables.amount"),
        (send_body(variables={"account_tail": "1234", "amount": 12.5}), 422, "variables.amount"),
        (send_body(variables={"account_tail": 1234, "amount": "1"}), 422, "variables.account_tail"),
        (send_body(recipient=None), 422, "recipient"),
        (send_body(recipient={"phone": "not-a-phone"}), 422, "recipient.phone"),
        (send_body(channels=["fax"]), 422, "channels.0"),
        (send_body(channels=["email"]), 422, "recipient"),
        (send_body(send_at="2026-01-01T10:00:00"), 422, "send_at"),
        (send_body(unexpected=1), 422, "unexpected"),
        ({"customer_id": "C1"}, 422, "scenario"),
    ]
    async with platform.client("system") as client:
        for body, status, expected in cases:
            response = await client.post("/v1/messages", json=body)
            assert response.status_code == status, (body, response.text)
            error = response.json()
            assert set(error) >= {"error", "detail"}
            if status == 422:
                assert error["error"] == "ValidationError"
                assert expected in [f["field"] for f in error["fields"]], (body, error)
            else:
                assert error["error"] == expected
    assert await count_messages(platform) == 0


async def test_malformed_and_oversized_bodies(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        bad_json = await client.post(
            "/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 422
        assert bad_json.json()["error"] == "ValidationError"
        assert bad_json.json()["fields"][0]["field"] == "body"
        huge = send_body(variables={**VARIABLES, "pad": "x" * 300_000})
        too_big = await client.post("/v1/messages", json=huge)
        assert too_big.status_code == 413
        assert too_big.json()["error"] == "PayloadTooLarge"

        async def chunks() -> Any:
            yield b'{"scenario": "account_movement", "pad": "'
            for _ in range(40):
                yield b"x" * 10_000
            yield b'"}'

        streamed = await client.post(
            "/v1/messages", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413


async def test_chinese_variables_render_and_roundtrip(platform: Platform) -> None:
    await platform.create_scenario(
        required_variables=[*SCENARIO["required_variables"], {"name": "name", "type": "string"}],
        templates={
            "wechat": {"body": "{{ name }}您好"},
            "sms": {"body": "【示例银行】{{ name }}您好，尾号{{ account_tail }}支出{{ amount }}元"},
            "email": {"subject": "通知", "body": "{{ name }}"},
        },
    )
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages", json=send_body(variables={**VARIABLES, "name": "欧阳娜娜"})
        )
    message = await platform.wait_terminal(response.json()["id"])
    assert message["content"]["sms"]["body"] == "【示例银行】欧阳娜娜您好，尾号1234支出1200.00元"


async def test_idempotent_replay_and_conflict(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        first = await client.post("/v1/messages", json=send_body(idempotency_key="tx-1"))
        again = await client.post("/v1/messages", json=send_body(idempotency_key="tx-1"))
        by_header = await client.post(
            "/v1/messages", json=send_body(), headers={"Idempotency-Key": "tx-1"}
        )
        other = await client.post(
            "/v1/messages",
            json=send_body(idempotency_key="tx-1", variables={**VARIABLES, "amount": "5.00"}),
        )
        mismatch = await client.post(
            "/v1/messages", json=send_body(idempotency_key="a"), headers={"Idempotency-Key": "b"}
        )
    assert first.status_code == 202
    assert "Idempotency-Replay" not in first.headers
    for replay in (again, by_header):
        assert replay.status_code == 202
        assert replay.headers["Idempotency-Replay"] == "true"
        assert replay.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert other.json()["error"] == "IdempotencyKeyReused"
    assert first.json()["id"] in other.json()["detail"]
    assert mismatch.status_code == 422
    assert await count_messages(platform) == 1


async def test_idempotency_is_scoped_per_owner(platform: Platform) -> None:
    await platform.create_scenario()
    ids = set()
    for role in ("system", "system_cards"):
        async with platform.client(role) as client:
            response = await client.post("/v1/messages", json=send_body(idempotency_key="same"))
        assert response.status_code == 202
        ids.add(response.json()["id"])
    assert len(ids) == 2


async def test_fifty_concurrent_duplicates_make_one_message(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/messages", json=send_body(idempotency_key="dup-50"))
                for _ in range(50)
            )
        )
    assert {r.status_code for r in responses} == {202}, [
        r.text for r in responses if r.status_code != 202
    ]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(1 for r in responses if "Idempotency-Replay" not in r.headers) == 1
    assert await count_messages(platform) == 1
    message = await platform.wait_terminal(responses[0].json()["id"])
    assert [e["type"] for e in message["events"]].count("sent") == 1


async def test_batch_accepts_good_items_and_reports_bad_ones(platform: Platform) -> None:
    await platform.create_scenario()
    good = {"customer_id": "C1", "variables": VARIABLES, "recipient": PHONE}
    items = [
        good,
        {**good, "variables": {"account_tail": "1"}},
        {**good, "recipient": {"phone": "x"}},
        {**good, "idempotency_key": "k1"},
        {**good, "idempotency_key": "k1"},
        {**good, "idempotency_key": "k1", "customer_id": "C2"},
        {**good, "customer_id": "C3", "recipient": {"email": "a@example.com"}},
        "not an object",
    ]
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
        assert response.status_code == 202, response.text
        result = response.json()
        replay = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items[3:4]}
        )
    by_index = {r["index"]: r for r in result["items"]}
    assert result["accepted"] == 4
    assert result["rejected"] == 4
    assert by_index[1]["fields"][0]["field"] == "variables.amount"
    assert by_index[2]["fields"][0]["field"] == "recipient.phone"
    assert by_index[4]["id"] == by_index[3]["id"]
    assert by_index[4]["replayed"] is True
    assert by_index[5]["error"] == "IdempotencyKeyReused"
    assert by_index[6]["status"] == "queued"
    assert by_index[7]["error"] == "ValidationError"
    assert by_index[7]["fields"][0]["field"] == "item"
    assert replay.json()["items"][0]["id"] == by_index[3]["id"]
    assert replay.json()["items"][0]["replayed"] is True
    for index in (0, 3, 6):
        assert (await platform.wait_terminal(by_index[index]["id"]))["status"] == "delivered"
    assert await count_messages(platform) == 3


async def test_batch_idempotency_key_header_replays_the_whole_batch(platform: Platform) -> None:
    await platform.create_scenario()
    items = [{"customer_id": f"C{i}", "variables": VARIABLES, "recipient": PHONE} for i in range(3)]
    body = {"scenario": "account_movement", "items": items}
    async with platform.client("system", **{"Idempotency-Key": "batch-7"}) as client:
        first = (await client.post("/v1/messages/batch", json=body)).json()
        again = (await client.post("/v1/messages/batch", json=body)).json()
    assert [r["id"] for r in again["items"]] == [r["id"] for r in first["items"]]
    assert all(r["replayed"] for r in again["items"])
    assert not any(r["replayed"] for r in first["items"])
    assert await count_messages(platform) == 3


async def test_batch_limits(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        unknown = await client.post(
            "/v1/messages/batch", json={"scenario": "nope", "items": [{"customer_id": "C1"}]}
        )
        empty = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": []}
        )
        too_many = await client.post(
            "/v1/messages/batch",
            json={"scenario": "account_movement", "items": [{"customer_id": "C"}] * 10_001},
        )
    assert unknown.status_code == 404
    assert empty.status_code == 422
    assert too_many.status_code == 413


async def test_list_filters_paginates_and_hides_other_owners(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        ids = [
            (await client.post("/v1/messages", json=send_body(customer_id=f"C{i % 2}"))).json()[
                "id"
            ]
            for i in range(5)
        ]
        page1 = (await client.get("/v1/messages", params={"limit": 2})).json()
        page2 = (
            await client.get("/v1/messages", params={"limit": 2, "cursor": page1["next_cursor"]})
        ).json()
        page3 = (
            await client.get("/v1/messages", params={"limit": 2, "cursor": page2["next_cursor"]})
        ).json()
        c0 = (await client.get("/v1/messages", params={"customer_id": "C0"})).json()
        bad_cursor = await client.get("/v1/messages", params={"cursor": "%%%"})
    assert [m["id"] for m in page1["items"]] == ids[::-1][:2]
    assert [m["id"] for m in page2["items"]] == ids[::-1][2:4]
    assert page2["next_cursor"] is not None
    assert "events" not in page1["items"][0]
    assert [m["id"] for m in page3["items"]] == ids[:1]
    assert page3["next_cursor"] is None
    assert {m["customer_id"] for m in c0["items"]} == {"C0"}
    assert len(c0["items"]) == 3
    assert bad_cursor.status_code == 422
    async with platform.client("system_cards") as other:
        assert (await other.get("/v1/messages")).json()["items"] == []
        assert (await other.get(f"/v1/messages/{ids[0]}")).status_code == 404
    async with platform.client("analyst") as analyst:
        assert len((await analyst.get("/v1/messages")).json()["items"]) == 5


async def test_list_since_is_by_creation_time(platform: Platform) -> None:
    """``since`` scans a range of (time-sortable) ids and filters on created_at: a message
    made just before it but created after it is listed, one created before it is not."""
    await platform.create_scenario()
    async with platform.client("system") as client:
        made_before = (await client.post("/v1/messages", json=send_body())).json()["id"]
        await asyncio.sleep(0.02)
        since = datetime.now(UTC)
        await asyncio.sleep(0.02)
        after = [
            (await client.post("/v1/messages", json=send_body())).json()["id"] for _ in range(2)
        ]
        await _mark(platform, made_before, created_at=since + timedelta(milliseconds=5))
        await _mark(platform, after[1], created_at=since - timedelta(hours=1))
        listed = await client.get("/v1/messages", params={"since": since.isoformat()})
        later = await client.get(
            "/v1/messages", params={"since": (since + timedelta(hours=1)).isoformat()}
        )
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["items"]] == [after[0], made_before]
    assert later.json()["items"] == []


async def _mark(platform: Platform, message_id: str, **values: Any) -> None:
    async with platform.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(Message).where(Message.id == message_id).values(**values))


async def test_experiment_campaign_and_tracking_fields(platform: Platform) -> None:
    """A message shows its experiment (id and key), variant, campaign, first open and first
    click: null while unset, RFC 3339 times with an offset; the list filters on them."""
    await platform.create_scenario()
    at = datetime(2026, 11, 23, 9, 12, 45, tzinfo=UTC)
    async with platform.client("system") as client:
        ids = [(await client.post("/v1/messages", json=send_body())).json()["id"] for _ in range(3)]
        plain = (await client.get(f"/v1/messages/{ids[0]}")).json()
        for field in ("experiment_id", "experiment", "variant", "campaign_id"):
            assert plain[field] is None
        assert plain["opened_at"] is None
        assert plain["clicked_at"] is None
        experiment_id = await _experiment(platform)
        await _mark(platform, ids[1], experiment_id=experiment_id, variant="short")
        await _mark(platform, ids[2], experiment_id="exp_gone", variant="b", campaign_id="cmp_1")
        await _mark(platform, ids[2], opened_at=at, clicked_at=at + timedelta(minutes=1))
        one = (await client.get(f"/v1/messages/{ids[1]}")).json()
        two = (await client.get(f"/v1/messages/{ids[2]}")).json()
        by_experiment = await client.get("/v1/messages", params={"experiment_id": experiment_id})
        by_campaign = await client.get("/v1/messages", params={"campaign_id": "cmp_1"})
        nothing = await client.get("/v1/messages", params={"campaign_id": "cmp_2"})
    assert (one["experiment_id"], one["experiment"], one["variant"]) == (
        experiment_id,
        "copy_test",
        "short",
    )
    assert (two["experiment_id"], two["experiment"], two["campaign_id"]) == (
        "exp_gone",
        None,  # no such experiment (any more): the id alone
        "cmp_1",
    )
    for field, expected in (("opened_at", at), ("clicked_at", at + timedelta(minutes=1))):
        shown = datetime.fromisoformat(two[field])
        assert shown.utcoffset() is not None
        assert shown == expected
    listed = by_experiment.json()["items"]
    assert [(m["id"], m["experiment"]) for m in listed] == [(ids[1], "copy_test")]
    assert [m["id"] for m in by_campaign.json()["items"]] == [ids[2]]
    assert nothing.json()["items"] == []


async def _experiment(platform: Platform) -> str:
    """A stored experiment row (the messages only refer to it)."""
    now = datetime.now(UTC)
    async with platform.runtime.sessionmaker() as session, session.begin():
        row = Experiment(
            id="exp_copy",
            key="copy_test",
            kind="patch",
            segment="everyone",
            variants=[{"key": "short", "weight": 1}],
            control="short",
            coverage=1.0,
            salt="copy_test",
            metric="clicked",
            attribution_hours=72,
            confidence=0.95,
            min_sample=100,
            target_lift=0.1,
            auto_winner=False,
            status="draft",
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    return row.id
