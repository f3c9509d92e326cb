"""POST /v1/conversions on both databases: attribution by message, by the last message
exposure, by an assignment-only exposure (a holdout), windows and event filters,
idempotency, the batch and the list. Experiments and assignments are inserted directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select, update

from app.experiments.models import Assignment, Experiment
from app.ids import new_id
from app.messages.models import Message
from app.timeutil import utcnow
from app.tracking.models import Conversion, TrackedLink
from tests.conftest import Platform
from tests.tracking.common import MARKETING, events, promo, send

NOW = utcnow()


async def _experiment(
    platform: Platform, key: str, *, hours: int = 72, event: str | None = None
) -> str:
    experiment_id = new_id("exp")
    variants = [{"key": k, "weight": 1, "holdout": k == "holdout"} for k in ("a", "b", "holdout")]
    async with platform.runtime.sessionmaker() as session:
        session.add(
            Experiment(
                id=experiment_id,
                key=key,
                kind="campaign",
                segment="everyone",
                variants=variants,
                control="holdout",
                salt=key,
                metric="converted",
                conversion_event=event,
                attribution_hours=hours,
                status="running",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await session.commit()
    return experiment_id


async def _assign(
    platform: Platform, experiment_id: str, customer: str, variant: str, at: datetime
) -> None:
    async with platform.runtime.sessionmaker() as session:
        session.add(
            Assignment(
                experiment_id=experiment_id, customer_id=customer, variant=variant, assigned_at=at
            )
        )
        await session.commit()


async def _exposed(
    platform: Platform, customer: str, experiment_id: str | None, variant: str | None, at: datetime
) -> str:
    """A message of ``customer`` sent in the experiment's variant at ``at``."""
    message_id = await send(platform, promo(customer))
    async with platform.runtime.sessionmaker() as session:
        await session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(experiment_id=experiment_id, variant=variant, created_at=at)
        )
        await session.commit()
    return message_id


async def _convert(
    platform: Platform, body: dict[str, Any], role: str = "system", **headers: str
) -> Any:
    async with platform.client(role, **headers) as client:
        return await client.post("/v1/conversions", json=body)


def _at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


async def test_attributed_by_message_with_converted_event(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    experiment_id = await _experiment(platform, "wealth_ab")
    message_id = await _exposed(platform, "C1", experiment_id, "b", NOW - timedelta(hours=1))
    body = {
        "customer_id": "C1",
        "event": "wealth_purchase",
        "value": "50000.00",
        "message_id": message_id,
    }
    response = await _convert(platform, body)
    assert response.status_code == 201, response.text
    conversion = response.json()
    assert conversion["value"] == "50000.00"
    assert conversion["attributed"] == {
        "message_id": message_id,
        "experiment_id": experiment_id,
        "experiment": "wealth_ab",
        "variant": "b",
    }
    async with platform.client("admin") as client:
        detail = (await client.get(f"/v1/messages/{message_id}")).json()
    converted = [e for e in detail["events"] if e["type"] == "converted"]
    assert len(converted) == 1
    assert converted[0]["detail"] == {
        "conversion_id": conversion["id"],
        "event": "wealth_purchase",
        "value": "50000.00",
    }


async def test_bad_message_references(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    message_id = await _exposed(platform, "C1", None, None, NOW)
    unknown = await _convert(
        platform, {"customer_id": "C1", "event": "x", "message_id": "msg_nope"}
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "NotFound"
    other = await _convert(platform, {"customer_id": "C2", "event": "x", "message_id": message_id})
    assert other.status_code == 422
    assert other.json()["fields"][0]["field"] == "message_id"
    plain = await _convert(platform, {"customer_id": "C1", "event": "x", "message_id": message_id})
    assert plain.json()["attributed"] == {
        "message_id": message_id,
        "experiment_id": None,
        "experiment": None,
        "variant": None,
    }


async def test_last_exposure_by_message_assignment_and_window(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    wealth = await _experiment(platform, "wealth_ab", hours=72)
    holdout = await _experiment(platform, "card_campaign", hours=24)
    await _exposed(platform, "C1", wealth, "a", NOW - timedelta(hours=10))
    latest = await _exposed(platform, "C1", wealth, "b", NOW - timedelta(hours=3))
    await _exposed(platform, "C1", None, None, NOW - timedelta(hours=1))  # not an exposure
    await _exposed(platform, "C1", wealth, "a", NOW + timedelta(hours=1))  # after it
    by_message = await _convert(
        platform, {"customer_id": "C1", "event": "buy", "occurred_at": _at(0)}
    )
    assert by_message.json()["attributed"] == {
        "message_id": latest,
        "experiment_id": wealth,
        "experiment": "wealth_ab",
        "variant": "b",
    }
    await _assign(platform, holdout, "C1", "holdout", NOW - timedelta(hours=2))
    by_assignment = await _convert(platform, {"customer_id": "C1", "event": "buy"})
    assert by_assignment.json()["attributed"] == {
        "message_id": None,
        "experiment_id": holdout,
        "experiment": "card_campaign",
        "variant": "holdout",
    }
    # before the assignment: the latest message is the last exposure
    earlier = await _convert(
        platform, {"customer_id": "C1", "event": "buy", "occurred_at": _at(2.5)}
    )
    assert earlier.json()["attributed"]["message_id"] == latest
    outside = await _convert(
        platform, {"customer_id": "C1", "event": "buy", "occurred_at": _at(90)}
    )
    assert outside.json()["attributed"] is None
    stranger = await _convert(platform, {"customer_id": "C9", "event": "buy"})
    assert stranger.json()["attributed"] is None


async def test_window_of_each_experiment(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    short = await _experiment(platform, "short", hours=2)
    await _assign(platform, short, "C1", "a", NOW - timedelta(hours=5))
    response = await _convert(platform, {"customer_id": "C1", "event": "buy"})
    assert response.json()["attributed"] is None
    inside = await _convert(platform, {"customer_id": "C1", "event": "buy", "occurred_at": _at(4)})
    assert inside.json()["attributed"]["experiment"] == "short"


async def test_conversion_event_filter(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    loans = await _experiment(platform, "loan_ab", event="loan_drawn")
    wealth = await _experiment(platform, "wealth_ab")
    message_id = await _exposed(platform, "C1", wealth, "a", NOW - timedelta(hours=3))
    await _assign(platform, loans, "C1", "b", NOW - timedelta(hours=1))
    other = await _convert(platform, {"customer_id": "C1", "event": "wealth_purchase"})
    assert other.json()["attributed"]["message_id"] == message_id
    drawn = await _convert(platform, {"customer_id": "C1", "event": "loan_drawn"})
    assert drawn.json()["attributed"]["experiment"] == "loan_ab"
    loan_message = await _exposed(platform, "C2", loans, "a", NOW - timedelta(hours=1))
    named = await _convert(
        platform, {"customer_id": "C2", "event": "wealth_purchase", "message_id": loan_message}
    )
    assert named.json()["attributed"]["experiment_id"] is None  # the message, not the test
    assert named.json()["attributed"]["message_id"] == loan_message


async def test_idempotency_replay_and_conflict(platform: Platform) -> None:
    body = {"customer_id": "C1", "event": "buy", "value": "12.5"}
    first = await _convert(platform, body, **{"Idempotency-Key": "k1"})
    again = await _convert(platform, body, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotency-replay"] == "true"
    assert "idempotency-replay" not in first.headers
    assert again.json() == first.json()
    assert first.json()["value"] == "12.50"
    clash = await _convert(platform, {**body, "value": "13"}, **{"Idempotency-Key": "k1"})
    assert clash.status_code == 409
    assert clash.json()["error"] == "IdempotencyKeyReused"
    other_owner = await _convert(platform, body, "system_cards", **{"Idempotency-Key": "k1"})
    assert other_owner.status_code == 201
    assert other_owner.json()["id"] != first.json()["id"]


async def test_a_utf8_idempotency_key_is_read_as_sent(platform: Platform) -> None:
    """As on the message routes: the header's UTF-8 is decoded (not taken as Latin-1) and
    its length counted in characters."""
    body = {"customer_id": "C1", "event": "buy", "value": "12.5"}

    def keyed(key: bytes) -> dict[bytes, bytes]:
        return {b"Idempotency-Key": key}

    key = "订单-0001"
    async with platform.client("system") as client:
        first = await client.post("/v1/conversions", json=body, headers=keyed(key.encode()))
        clash = await client.post(
            "/v1/conversions", json={**body, "value": "13"}, headers=keyed(key.encode())
        )
        batch = await client.post(
            "/v1/conversions/batch", json={"items": [body]}, headers=keyed(key.encode())
        )
        long_key = ("订" * 200).encode()  # 200 characters, 600 bytes
        long = await client.post("/v1/conversions", json=body, headers=keyed(long_key))
        too_long = ("订" * 201).encode()
        refused = await client.post("/v1/conversions", json=body, headers=keyed(too_long))
        batch_refused = await client.post(
            "/v1/conversions/batch", json={"items": [body]}, headers=keyed(too_long)
        )
        not_utf8 = await client.post("/v1/conversions", json=body, headers=keyed(b"\xff\xfe"))
    assert first.status_code == 201, first.text
    assert clash.status_code == 409
    assert repr(key) in clash.json()["detail"]  # named as sent, not as mojibake
    assert batch.status_code == 200, batch.text
    assert batch.json()["items"][0]["replayed"] is False  # "订单-0001:0": another key
    assert long.status_code == 201, long.text
    assert refused.status_code == 422
    assert batch_refused.status_code == 422
    assert "Idempotency-Key" in refused.json()["detail"]
    assert not_utf8.status_code == 422


async def test_validation_and_roles(platform: Platform) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).astimezone(timezone(timedelta(hours=8)))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"customer_id": "C1", "event": "buy", "occurred_at": future.isoformat()}, "occurred_at"),
        ({"customer_id": "C1", "event": "buy", "value": 12.5}, "value"),
        ({"customer_id": "C1", "event": "buy", "value": "1e3"}, "value"),
        (
            {"customer_id": "C1", "event": "buy", "occurred_at": "2026-11-23T10:00:00"},
            "occurred_at",
        ),
        ({"customer_id": "C1"}, "event"),
    ]
    for body, field in cases:
        response = await _convert(platform, body)
        assert response.status_code == 422, body
        assert field in response.json()["detail"], response.text
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    assert (
        await _convert(platform, {"customer_id": "C1", "event": "b", "occurred_at": soon})
    ).status_code == 201
    assert (
        await _convert(platform, {"customer_id": "C1", "event": "b"}, "marketer")
    ).status_code == 403
    assert (
        await _convert(platform, {"customer_id": "C1", "event": "b"}, "admin")
    ).status_code == 201


async def test_batch_with_bad_items(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    experiment_id = await _experiment(platform, "wealth_ab")
    message_id = await _exposed(platform, "C1", experiment_id, "a", NOW - timedelta(hours=1))
    items = [
        {"customer_id": "C1", "event": "buy", "value": "1.00"},
        {"customer_id": "C1"},
        {"customer_id": "C1", "event": "buy", "message_id": "msg_missing"},
        {"customer_id": "C2", "event": "buy"},
        "not an object",
    ]
    async with platform.client("system", **{"Idempotency-Key": "b1"}) as client:
        response = await client.post("/v1/conversions/batch", json={"items": items})
        replay = await client.post("/v1/conversions/batch", json={"items": items})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (2, 3)
    good, missing_event, unknown, stranger, garbage = result["items"]
    assert good["conversion"]["attributed"]["message_id"] == message_id
    assert missing_event["error"] == "ValidationError"
    assert unknown["error"] == "NotFound"
    assert stranger["conversion"]["attributed"] is None
    assert garbage["error"] == "ValidationError"
    assert [i["index"] for i in result["items"]] == [0, 1, 2, 3, 4]
    again = replay.json()
    assert again["items"][0]["replayed"] is True
    assert again["items"][0]["conversion"] == good["conversion"]
    assert len(await events(platform, message_id, "converted")) == 1


async def test_list_by_customer_and_experiment(platform: Platform) -> None:
    await platform.create_scenario(**MARKETING)
    experiment_id = await _experiment(platform, "wealth_ab")
    await _assign(platform, experiment_id, "C1", "a", NOW - timedelta(hours=1))
    for customer in ("C1", "C1", "C1", "C2"):
        assert (
            await _convert(platform, {"customer_id": customer, "event": "buy"})
        ).status_code == 201
    async with platform.client("analyst") as client:
        page = (
            await client.get("/v1/conversions", params={"customer_id": "C1", "limit": 2})
        ).json()
        rest = (
            await client.get(
                "/v1/conversions", params={"customer_id": "C1", "cursor": page["next_cursor"]}
            )
        ).json()
        by_experiment = (
            await client.get("/v1/conversions", params={"experiment": "wealth_ab"})
        ).json()
        by_id = (await client.get("/v1/conversions", params={"experiment": experiment_id})).json()
        unknown = await client.get("/v1/conversions", params={"experiment": "nope"})
    assert (len(page["items"]), len(rest["items"]), rest["next_cursor"]) == (2, 1, None)
    assert len(by_experiment["items"]) == 3 == len(by_id["items"])
    assert {c["attributed"]["variant"] for c in by_experiment["items"]} == {"a"}
    assert unknown.status_code == 404
    async with platform.client("system") as client:
        assert (await client.get("/v1/conversions")).status_code == 403


async def test_a_named_message_counts_for_its_experiment_only_within_the_window(
    platform: Platform,
) -> None:
    await platform.create_scenario(**MARKETING)
    experiment_id = await _experiment(platform, "wealth_ab", hours=24)
    message_id = await _exposed(platform, "C1", experiment_id, "b", NOW - timedelta(hours=30))
    credited = {
        "message_id": message_id,
        "experiment_id": experiment_id,
        "experiment": "wealth_ab",
        "variant": "b",
    }
    not_credited = {**credited, "experiment_id": None, "experiment": None, "variant": None}
    for hours_ago, expected in ((7, credited), (31, not_credited), (2, not_credited)):
        body = {"customer_id": "C1", "event": "buy", "occurred_at": _at(hours_ago)}
        response = await _convert(platform, {**body, "message_id": message_id})
        assert response.status_code == 201, response.text
        assert response.json()["attributed"] == expected, hours_ago


async def test_erasure_keeps_conversions_and_assignments_anonymously(platform: Platform) -> None:
    """Erasing a customer: their tracked links go (a link may carry personal data), their
    conversions and assignments stay under the messages' anonymous id, so reports keep
    their counts."""
    await platform.create_scenario(**MARKETING)
    experiment_id = await _experiment(platform, "erasure_ab")
    message_id = await _exposed(platform, "C1", experiment_id, "b", NOW - timedelta(hours=1))
    await _assign(platform, experiment_id, "C1", "b", NOW - timedelta(hours=1))
    body = {"customer_id": "C1", "event": "wealth_purchase", "message_id": message_id}
    assert (await _convert(platform, body)).status_code == 201

    async def links() -> int:
        async with platform.runtime.sessionmaker() as session:
            count = await session.scalar(
                select(func.count()).where(TrackedLink.message_id == message_id)
            )
        return int(count or 0)

    assert await links() > 0
    async with platform.client("system") as client:
        assert (await client.delete("/v1/customers/C1")).status_code == 200
    assert await links() == 0
    async with platform.runtime.sessionmaker() as session:
        anonymous = await session.scalar(
            select(Message.customer_id).where(Message.id == message_id)
        )
        converted = list(await session.scalars(select(Conversion.customer_id)))
        assigned = list(await session.scalars(select(Assignment.customer_id)))
    assert anonymous is not None
    assert anonymous.startswith("anon_")
    assert converted == [anonymous]
    assert assigned == [anonymous]
