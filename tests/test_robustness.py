"""Bad input and broken parts fail alone: never a group, a batch or a wave with them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.db import refused_text, too_long
from app.messages.bulk_pg import driver_connection
from app.messages.models import InboundMessage
from channels.base import ProviderContext, SendResult
from channels.sandbox import SandboxProvider
from tests.conftest import SCENARIO, VARIABLES, Platform
from tests.providers import ReportingProvider
from tests.test_customers import reporting_sms

GOOD = {
    "scenario": "account_movement",
    "customer_id": "C1",
    "variables": VARIABLES,
    "recipient": {"phone": "13800001234"},
}
BAD_BODIES = [
    ({**GOOD, "variables": {**VARIABLES, "x": 10**30}}, "variables"),
    ({**GOOD, "variables": {**VARIABLES, "note": "a\u0000b"}}, "variables"),
    ({**GOOD, "customer_id": "C\u00001"}, "customer_id"),
    ({**GOOD, "send_at": "0001-01-01T00:00:00+05:00"}, "send_at"),
]


async def test_a_bad_request_fails_alone_among_concurrent_ones(platform: Platform) -> None:
    await platform.create_scenario()
    async with platform.client("system") as client:
        for bad, field in BAD_BODIES:
            responses = await asyncio.gather(
                *(client.post("/v1/messages", json=GOOD) for _ in range(4)),
                client.post("/v1/messages", json=bad),
                *(client.post("/v1/messages", json=GOOD) for _ in range(4)),
            )
            statuses = [r.status_code for r in responses]
            assert statuses == [202] * 4 + [422] + [202] * 4, (field, statuses, responses[4].text)
            assert responses[4].json()["fields"][0]["field"].startswith(field)


async def test_a_bad_item_fails_alone_in_a_batch(platform: Platform) -> None:
    await platform.create_scenario()
    items = [{k: v for k, v in body.items() if k != "scenario"} for body, _ in BAD_BODIES]
    good = {k: v for k, v in GOOD.items() if k != "scenario"}
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": [good, *items]}
        )
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == 1
    assert [r["error"] for r in result["items"][1:]] == ["ValidationError"] * len(BAD_BODIES)


async def test_a_template_failing_at_render_is_a_422(platform: Platform) -> None:
    # publishable (declared variables, known filters), but int + str fails at render
    templates = {**SCENARIO["templates"], "sms": {"body": "{{ account_tail|int + amount }}"}}
    await platform.create_scenario(templates=templates)
    async with platform.client("system") as client:
        response = await client.post("/v1/messages", json=GOOD)
    assert response.status_code == 422
    assert "template failed" in response.json()["detail"]


class BuggyProvider(SandboxProvider):
    """Raises a plain exception for one recipient, as a provider with a bug would."""

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        if to.endswith("0000"):
            raise KeyError("bug")
        return await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )


async def test_a_provider_bug_fails_its_message_not_the_wave(platform: Platform) -> None:
    await platform.create_scenario()
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    platform.runtime.providers.replace(
        "sms", [BuggyProvider(account="buggy", channel="sms", context=context)]
    )
    items = [
        {"customer_id": f"C{i}", "variables": VARIABLES, "recipient": {"phone": f"1380000{i:04d}"}}
        for i in range(6)
    ]
    async with platform.client("system") as client:
        response = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
    ids = [r["id"] for r in response.json()["items"]]
    messages = [await platform.wait_terminal(i) for i in ids]
    assert [m["status"] for m in messages] == ["failed"] + ["delivered"] * 5
    codes = {e["detail"]["code"] for e in messages[0]["events"] if e["type"] == "attempt_failed"}
    assert codes == {"internal_error"}
    for message in messages[1:]:  # each good one sent exactly once
        assert [e["type"] for e in message["events"]].count("sent") == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_failed_enqueue_after_commit_still_answers_202(platform: Platform) -> None:
    await platform.create_scenario()

    async def broken(ids: Any, *, delay: float = 0.0) -> None:
        raise ConnectionError("queue down")

    platform.runtime.queue.enqueue = broken  # type: ignore[method-assign]
    async with platform.client("system") as client:
        single = await client.post("/v1/messages", json=GOOD)
        batch = await client.post(
            "/v1/messages/batch",
            json={
                "scenario": "account_movement",
                "items": [
                    {
                        "customer_id": "C2",
                        "variables": VARIABLES,
                        "recipient": {"phone": "13800001234"},
                    }
                ],
            },
        )
    assert single.status_code == 202
    assert batch.status_code == 202


async def test_nul_characters_are_a_422_on_every_route(platform: Platform) -> None:
    """PostgreSQL stores no NUL: a request carrying one is refused whole (URL, JSON body),
    or field by field where the route's models check it; never a 500 on either database."""
    await platform.create_scenario()
    template = {"key": "nul.sms", "channel": "sms", "content": {"body": "a\u0000b"}}
    async with platform.client("admin") as client:
        for response in (
            await client.get("/v1/messages", params={"customer_id": "a\u0000b"}),
            await client.get("/v1/scenarios/a%00b"),
            await client.post("/v1/templates", json=template),
            await client.post("/v1/segments", json={"key": "s\u0000", "rule": {"all": []}}),
        ):
            assert response.status_code == 422, response.text
            assert "NUL" in response.json()["detail"]
        # JSON in UTF-16 is read as such (the decoder detects it): its NUL too
        utf16 = json.dumps({"key": "s2", "rule": {"all": []}, "name": "a\u0000"}).encode("utf-16")
        headers = {"content-type": "application/json"}
        refused = await client.post("/v1/segments", content=utf16, headers=headers)
        assert refused.status_code == 422, refused.text
        assert "NUL" in refused.json()["detail"]
        # the text "\u0000" (an escaped backslash) is no NUL
        literal = {**template, "content": {"body": "a\\u0000b"}}
        created = await client.post("/v1/templates", json=literal)
        assert created.status_code == 201, created.text
        version = await client.get("/v1/templates/nul.sms/versions/1")
        assert version.json()["content"]["body"] == "a\\u0000b"
        # a batch refuses the item, not the batch
        items = [
            {"customer_id": "C1", "variables": VARIABLES, "recipient": {"phone": p}}
            for p in ("13800001234", "1380000\u00001235")
        ]
        batch = await client.post(
            "/v1/messages/batch", json={"scenario": "account_movement", "items": items}
        )
        assert batch.status_code == 202, batch.text
        assert [i["error"] for i in batch.json()["items"]] == [None, "ValidationError"]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgresql_refusing_a_nul_is_told_apart(platform: Platform) -> None:
    """The backstop behind app.nul_guard: PostgreSQL's refusals of NUL, in text and in
    JSONB, through SQLAlchemy and from asyncpg itself, are a 422, not a 500."""
    refusals: list[BaseException | None] = []
    async with platform.runtime.sessionmaker() as session:
        for sql, value in (
            ("SELECT CAST(:v AS text)", "a\x00b"),
            ("SELECT CAST(:v AS jsonb)", '"\\u0000"'),
        ):
            with pytest.raises(DBAPIError) as caught:
                await session.execute(text(sql), {"v": value})
            refusals += [caught.value, caught.value.orig]
            await session.rollback()
        driver = await driver_connection(session)  # asyncpg's own error, unwrapped
        with pytest.raises(asyncpg.PostgresError) as raw:
            await driver.fetchval("SELECT CAST($1::text AS text)", "a\x00b")
        refusals.append(raw.value)
    assert all(refused_text(exc) for exc in refusals if exc is not None)
    assert not refused_text(ValueError("a\x00b"))


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgresql_refusing_a_value_longer_than_its_column_is_a_422(
    platform: Platform,
) -> None:
    """The backstop behind the length checks: PostgreSQL's refusal (22001) is a 422."""
    async with platform.runtime.sessionmaker() as session:
        await session.execute(text("CREATE TEMP TABLE short (v varchar(3))"))
        with pytest.raises(DBAPIError) as caught:
            await session.execute(text("INSERT INTO short VALUES (:v)"), {"v": "abcd"})
    assert too_long(caught.value)
    assert not too_long(ValueError("abcd"))
    app = platform.app

    @app.get("/too-long")
    async def _raise() -> None:
        raise caught.value

    async with platform.served_client() as client:
        response = await client.get("/too-long")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"


async def test_a_callback_with_a_nul_is_taken_without_it(platform: Platform) -> None:
    """A provider does not send again a callback answered with a 4xx: its receipts and
    replies are taken, the NUL dropped (PostgreSQL stores none)."""
    reporting_sms(platform)
    async with platform.client(None) as client:
        response = await client.post(
            "/v1/callbacks/reporting-sms",
            params={"token": ReportingProvider.TOKEN},
            json={
                "receipts": [{"delivered": False, "message_id": "msg_x", "detail": "bad\u0000"}],
                "replies": [{"sender": "1380000\u00001234", "text": "T\u0000D"}],
            },
        )
    assert response.status_code == 200, response.text
    async with platform.runtime.sessionmaker() as session:
        replies = (await session.scalars(select(InboundMessage))).all()
    assert [(r.sender, r.text, r.opt_out) for r in replies] == [("13800001234", "TD", True)]
