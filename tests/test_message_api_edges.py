"""Edges of the message API found by an audit: every bad input gets a 4xx
``{"error", "detail"}``, never a 500; accepted data is never lost; an idempotency key means one
message, however the caller spells the request; a caller without the right key learns nothing
about the body."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.logging import MaskingJsonFormatter
from app.messages.compose import request_hash
from app.messages.models import Message
from app.messages.schemas import MessageItem
from tests.conftest import Platform, count_messages, send_body


def _client(platform: Platform, role: str = "system", **headers: str) -> httpx.AsyncClient:
    """Like Platform.client, but a 500 comes back as the response a real server sends
    instead of being raised into the test."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=platform.app, raise_app_exceptions=False),
        base_url="http://icc.test",
        headers={"Authorization": f"Bearer {platform.keys[role]}", **headers},
    )


def _assert_client_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert {"error", "detail"} <= set(response.json())


# --- 1. `since` at the calendar's ends: 500 ------------------------------------------------


@pytest.mark.parametrize(
    "since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"], ids=["min", "max"]
)
async def test_list_since_at_calendar_edges_is_a_client_error(
    platform: Platform, since: str
) -> None:
    """A valid RFC 3339 time whose UTC value leaves datetime's range (it overflowed in the
    bind processor, a 500) is a 422: API times are within 1970-9998."""
    await platform.create_scenario()
    async with _client(platform) as client:
        assert (await client.post("/v1/messages", json=send_body())).status_code == 202
        response = await client.get("/v1/messages", params={"since": since})
    _assert_client_error(response)


async def test_other_times_at_calendar_edges_are_client_errors(platform: Platform) -> None:
    """The same overflow behind the sandbox list's `since` and a campaign's `starts_at`."""
    edge = "0001-01-01T00:00:00+01:00"
    async with _client(platform, "analyst") as client:
        sandbox = await client.get("/v1/sandbox/deliveries", params={"since": edge})
    _assert_client_error(sandbox)
    await platform.create_scenario()
    async with _client(platform, "marketer") as client:
        campaign = await client.post(
            "/v1/campaigns",
            json={
                "key": "edge",
                "scenario": "account_movement",
                "segment": "nope",
                "starts_at": edge,
            },
        )
    _assert_client_error(campaign)


# --- 2. a lone surrogate (JSON "\ud800") in variables: 500, and a whole batch lost ------------

ITEM_OK = (
    b'{"customer_id":"C1","recipient":{"phone":"13800001234"},'
    b'"variables":{"account_tail":"1234","amount":"1.00"}}'
)
ITEM_SURROGATE = (
    b'{"customer_id":"C2","recipient":{"phone":"13800001234"},'
    b'"variables":{"account_tail":"1234","amount":"1.00","note":"\\ud800"}}'
)


async def test_lone_surrogate_in_variables_is_a_422(platform: Platform) -> None:
    """JSON may escape a lone surrogate; Python keeps it in the str, the models take it, and
    the INSERT's JSON serializer (orjson) or the driver refuses it: 500 InternalError."""
    await platform.create_scenario()
    body = b'{"scenario":"account_movement",' + ITEM_SURROGATE[1:]
    async with _client(platform, **{"Content-Type": "application/json"}) as client:
        response = await client.post("/v1/messages", content=body)
    _assert_client_error(response)
    assert response.status_code == 422


async def test_batch_item_with_lone_surrogate_rejects_only_itself(platform: Platform) -> None:
    """ "One bad item rejects only itself": here one item fails the batch's bulk INSERT and
    the whole batch (10,000 good messages as well) is answered 500 and not stored."""
    await platform.create_scenario()
    body = b'{"scenario":"account_movement","items":[' + ITEM_OK + b"," + ITEM_SURROGATE + b"]}"
    async with _client(platform, **{"Content-Type": "application/json"}) as client:
        response = await client.post("/v1/messages/batch", content=body)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["items"][0]["id"] is not None
    assert answer["items"][1]["error"] == "ValidationError"
    assert await count_messages(platform) == 1


# --- 3. NUL in the scenario of a single send: 500 on PostgreSQL (404 on SQLite) -------------


async def test_nul_in_scenario_of_a_single_send_is_a_client_error(platform: Platform) -> None:
    """/v1/messages is exempt from the NUL guard (its models check field by field), but
    MessageCreate.scenario has no NUL check: on PostgreSQL the scenario lookup fails inside
    the coalesced accept group, which turns it into a 500 (the batch route answers 422)."""
    await platform.create_scenario()
    body = (
        b'{"scenario":"account_movement\\u0000","customer_id":"C1",'
        b'"recipient":{"phone":"13800001234"},"variables":{"account_tail":"1234","amount":"1.00"}}'
    )
    async with _client(platform, **{"Content-Type": "application/json"}) as client:
        response = await client.post("/v1/messages", content=body)
    _assert_client_error(response)


# --- 4. a UTF-8 Idempotency-Key header is read as Latin-1 ----------------------------------


async def test_utf8_idempotency_header_is_the_same_key_as_in_the_body(platform: Platform) -> None:
    """A key such as 订单-20261123-0001 sent as the header (UTF-8 bytes) is stored as its
    Latin-1 mojibake: the same key in the body later is another key (a second message, sent
    twice), and the same key in both is refused as "differs from the header"."""
    await platform.create_scenario()
    key = "订单-20261123-0001"
    async with platform.client("system") as client:
        first = await client.post(
            "/v1/messages", json=send_body(), headers=[(b"Idempotency-Key", key.encode())]
        )
        assert first.status_code == 202, first.text
        retry = await client.post("/v1/messages", json=send_body(idempotency_key=key))
        both = await client.post(
            "/v1/messages",
            json=send_body(idempotency_key=key),
            headers=[(b"Idempotency-Key", key.encode())],
        )
    assert retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"], "the retry was sent as a second message"
    assert retry.headers.get("Idempotency-Replay") == "true"
    assert both.status_code == 202, both.text  # the same key twice is one key
    assert await count_messages(platform) == 1


# --- 5. a replay that writes send_at in another offset is refused --------------------------


async def test_replay_with_send_at_in_another_offset_is_a_replay(platform: Platform) -> None:
    """send_at is one instant (stored in UTC), but the request hash serializes it with the
    caller's offset: a retry from a client that formats times in UTC gets 409."""
    await platform.create_scenario()
    async with platform.client("system") as client:
        first = await client.post(
            "/v1/messages",
            json=send_body(send_at="2031-01-01T08:00:00+08:00"),
            headers={"Idempotency-Key": "sched-1"},
        )
        again = await client.post(
            "/v1/messages",
            json=send_body(send_at="2031-01-01T00:00:00Z"),
            headers={"Idempotency-Key": "sched-1"},
        )
    assert first.status_code == 202
    assert first.json()["send_at"] == "2031-01-01T00:00:00Z"
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]


# --- 6. e-mail addresses the API accepts are not masked in the logs --------------------------


async def test_addresses_the_api_accepts_are_masked_in_logs(platform: Platform) -> None:
    """EMAIL_PATTERN accepts internationalized addresses (RFC 6531, common in China); the log
    masker's e-mail pattern is ASCII-only, so they reach the JSON logs in full."""
    await platform.create_scenario()
    address = "张三@例子.中国"
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages",
            json=send_body(recipient={"email": address}, channels=["email"]),
        )
    assert response.status_code == 202, response.text  # the API takes the address
    record = logging.LogRecord(
        "icc.test",
        logging.WARNING,
        __file__,
        1,
        "smtp: 550 <%s> mailbox unavailable",
        (address,),
        None,
    )
    line = MaskingJsonFormatter().format(record)
    assert address not in line, line


# --- 7. POST /v1/messages validates the body before it authenticates ----------------------


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("marketer", 403), ("analyst", 403)])
async def test_send_checks_the_key_before_the_body(
    platform: Platform, role: str | None, status: int
) -> None:
    """The route authorizes by hand inside the endpoint, after FastAPI has parsed and
    validated `body: MessageCreate`: without a key (or with a marketer's) an incomplete body
    gets 422 listing the schema's errors instead of 401/403 (the batch route answers 401)."""
    async with platform.client(role) as client:
        response = await client.post("/v1/messages", json={"customer_id": "C1"})
        batch = await client.post("/v1/messages/batch", json={})
    assert batch.status_code == status, batch.text
    assert response.status_code == status, response.text


async def test_a_message_hashed_before_utc_hashing_still_replays(platform: Platform) -> None:
    """Messages stored when send_at was hashed as written replay when retried as written."""
    await platform.create_scenario()
    body = send_body(send_at="2031-01-01T08:00:00+08:00")
    async with platform.client("system") as client:
        first = await client.post("/v1/messages", json=body, headers={"Idempotency-Key": "k1"})
        item = MessageItem.model_validate({k: v for k, v in body.items() if k != "scenario"})
        legacy = request_hash("account_movement", item, as_sent=True)
        async with platform.runtime.sessionmaker() as session:
            await session.execute(
                update(Message).where(Message.id == first.json()["id"]).values(request_hash=legacy)
            )
            await session.commit()
        again = await client.post("/v1/messages", json=body, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202, again.text
    assert again.headers["Idempotency-Replay"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_a_utf8_idempotency_key_counts_characters_on_both_routes(platform: Platform) -> None:
    """A key of 70 Chinese characters (210 bytes in UTF-8) is within the 200-character limit
    on the batch route as on the single one; 201 characters are over it on both."""
    await platform.create_scenario()
    key = "订" * 70
    items = [send_body(), send_body(customer_id="C2")]
    for item in items:
        del item["scenario"]
    batch = {"scenario": "account_movement", "items": items}

    async def send(path: str, body: dict[str, Any], header: str) -> httpx.Response:
        async with platform.client("system") as client:
            return await client.post(path, json=body, headers={b"Idempotency-Key": header.encode()})

    single = await send("/v1/messages", send_body(), key)
    first = await send("/v1/messages/batch", batch, key)
    again = await send("/v1/messages/batch", batch, key)
    assert single.status_code == first.status_code == again.status_code == 202, first.text
    assert [r["replayed"] for r in again.json()["items"]] == [True, True]
    async with platform.runtime.sessionmaker() as session:
        keys = await session.scalars(select(Message.idempotency_key).order_by(Message.id))
        assert set(keys) == {key, f"{key}:0", f"{key}:1"}
    for path, body in (("/v1/messages", send_body()), ("/v1/messages/batch", batch)):
        too_long = await send(path, body, "k" * 201)
        assert too_long.status_code == 422, too_long.text
        assert too_long.json()["fields"][0]["field"] == "Idempotency-Key"
