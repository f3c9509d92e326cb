"""/v1/customers and /v1/customer-attributes: profiles, schema, masking, erasure, consent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.callbacks import service as callbacks
from app.messages.models import InboundMessage, Message, MessageEvent
from app.sandbox.models import SandboxDelivery
from channels.base import CallbackResult, InboundReply, ProviderContext
from tests.conftest import VARIABLES, Platform
from tests.providers import ReportingProvider

ATTRIBUTES = {
    "aum": {"type": "number", "description": "assets under management, CNY"},
    "tier": {"type": "string"},
    "age": {"type": "integer"},
    "payroll": {"type": "boolean"},
    "opened_on": {"type": "date"},
    "last_login": {"type": "datetime"},
    "products": {"type": "string_list"},
}
PROFILE: dict[str, Any] = {
    "name": "张伟",
    "phone": "13800000001",
    "email": "zhang.wei@example.com",
    "wechat_openid": "oDemo0000000000000000000001",
    "attributes": {
        "aum": "1200000.50",
        "tier": "private",
        "age": 42,
        "payroll": True,
        "opened_on": "2015-03-01",
        "last_login": "2026-11-23T09:30:00.123+08:00",
        "products": ["deposit", "fund"],
    },
    "tags": ["wealth", "payroll", "wealth"],
}


async def declare(platform: Platform, attributes: dict[str, Any] = ATTRIBUTES) -> None:
    async with platform.client("marketer") as client:
        for name, spec in attributes.items():
            response = await client.put(f"/v1/customer-attributes/{name}", json=spec)
            assert response.status_code in (200, 201), response.text


def reporting_sms(platform: Platform) -> None:
    """SMS through a provider that takes replies on /v1/callbacks/reporting-sms."""
    context = ProviderContext(sessionmaker=platform.runtime.sessionmaker)
    platform.runtime.providers.replace("sms", [ReportingProvider("sms", context)])


async def sms_reply(platform: Platform, sender: str, text: str) -> None:
    async with platform.client(None) as client:
        response = await client.post(
            "/v1/callbacks/reporting-sms",
            params={"token": ReportingProvider.TOKEN},
            json={"replies": [{"sender": sender, "text": text}]},
        )
    assert response.status_code == 200, response.text


async def put(
    platform: Platform, customer_id: str, body: dict[str, Any], role: str = "system"
) -> Any:
    async with platform.client(role) as client:
        return await client.put(f"/v1/customers/{customer_id}", json=body)


async def test_attribute_schema_declare_change_remove(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        created = await client.put("/v1/customer-attributes/aum", json=ATTRIBUTES["aum"])
        assert created.status_code == 201
        assert created.json()["type"] == "number"
        again = await client.put(
            "/v1/customer-attributes/aum", json={"type": "number", "description": "AUM"}
        )
        assert again.status_code == 200
        assert again.json()["description"] == "AUM"
        for name, body, field in (
            ("Bad-Name", {"type": "string"}, "name"),
            ("phone", {"type": "string"}, "name"),
            ("x", {"type": "money"}, "type"),
        ):
            bad = await client.put(f"/v1/customer-attributes/{name}", json=body)
            assert bad.status_code == 422, bad.text
            assert bad.json()["fields"][0]["field"] == field
        listed = (await client.get("/v1/customer-attributes")).json()
        assert [a["name"] for a in listed["items"]] == ["aum"]
        assert (await client.get("/v1/customer-attributes/nope")).status_code == 404
    assert (await put(platform, "C1", {"attributes": {"aum": 10}})).status_code == 201
    async with platform.client("marketer") as client:
        # a type change or removal would leave stored values invalid
        changed = await client.put("/v1/customer-attributes/aum", json={"type": "string"})
        assert changed.status_code == 409, changed.text
        assert (await client.delete("/v1/customer-attributes/aum")).status_code == 409
    assert (await put(platform, "C1", {})).status_code == 200  # the value is gone
    async with platform.client("marketer") as client:
        changed = await client.put("/v1/customer-attributes/aum", json={"type": "string"})
        assert changed.status_code == 200
        assert (await client.delete("/v1/customer-attributes/aum")).status_code == 204
        assert (await client.delete("/v1/customer-attributes/aum")).status_code == 404


async def test_upsert_get_and_replace(platform: Platform) -> None:
    await declare(platform)
    created = await put(platform, "C0001", PROFILE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["attributes"] == {
        "aum": "1200000.5",
        "tier": "private",
        "age": 42,
        "payroll": True,
        "opened_on": "2015-03-01",
        "last_login": "2026-11-23T01:30:00Z",
        "products": ["deposit", "fund"],
    }
    assert body["tags"] == ["payroll", "wealth"]
    assert body["name"] == "张伟"
    assert body["phone"] == "13800000001"
    assert body["locale"] == "zh-CN"
    assert body["timezone"] == "Asia/Shanghai"
    first_update = body["updated_at"]
    same = await put(platform, "C0001", PROFILE, role="marketer")
    assert same.status_code == 200
    assert same.json()["updated_at"] == first_update  # nothing changed, nothing written
    replaced = await put(platform, "C0001", {"phone": "+8613800000009", "attributes": {"aum": 5}})
    assert replaced.status_code == 200
    out = replaced.json()
    assert out["name"] is None  # PUT replaces the profile
    assert out["attributes"] == {"aum": "5"}
    assert out["tags"] == []
    async with platform.client("analyst") as client:
        read = (await client.get("/v1/customers/C0001")).json()
        assert read["phone"] == "+86138****0009"  # analysts see contacts masked
        assert (await client.get("/v1/customers/nobody")).status_code == 404
    # through the send path: the stored phone is used
    await platform.create_scenario()
    async with platform.client("system") as client:
        sent = await client.post(
            "/v1/messages",
            json={"scenario": "account_movement", "customer_id": "C0001", "variables": VARIABLES},
        )
    assert sent.status_code == 202, sent.text
    message = await platform.wait_terminal(sent.json()["id"])
    assert message["channel"] == "sms"


async def test_profile_validation_errors_name_the_field(platform: Platform) -> None:
    await declare(platform)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("C1", {"attributes": {"aum": "12,000"}}, "attributes.aum"),
        ("C1", {"attributes": {"aum": 1.5e20}}, "attributes.aum"),
        ("C1", {"attributes": {"age": "forty"}}, "attributes.age"),
        ("C1", {"attributes": {"payroll": "maybe"}}, "attributes.payroll"),
        ("C1", {"attributes": {"opened_on": "2015-02-30"}}, "attributes.opened_on"),
        ("C1", {"attributes": {"last_login": "2026-11-23T09:30:00"}}, "attributes.last_login"),
        ("C1", {"attributes": {"products": "fund"}}, "attributes.products"),
        ("C1", {"attributes": {"branch": "Shanghai"}}, "attributes.branch"),
        ("C1", {"phone": "call me"}, "phone"),
        ("C1", {"email": "nope"}, "email"),
        ("C1", {"timezone": "Mars/Olympus"}, "timezone"),
        ("C1", {"locale": "Chinese"}, "locale"),
        ("C1", {"tags": ["a|b"]}, "tags"),
        ("C1", {"locale": "zh-Hans12-CN123456"}, "locale"),  # longer than the column
        ("C1", {"unknown_field": 1}, "unknown_field"),
        ("bad id!", {}, "customer_id"),
    ]
    for customer_id, body, field in cases:
        response = await put(platform, customer_id, body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()
        assert error["error"] == "ValidationError"
        assert field in [f["field"] for f in error["fields"]], (body, error)
    async with platform.client("marketer") as client:  # a lone surrogate: not UTF-8
        raw = await client.put(
            "/v1/customers/C1",
            content=b'{"tags": ["\\udc00x"]}',
            headers={"Content-Type": "application/json"},
        )
    assert raw.status_code == 422, raw.text
    assert raw.json()["fields"][0]["field"] == "tags"
    both = await put(platform, "C1", {"attributes": {"aum": "x", "branch": "y"}})
    assert {f["field"] for f in both.json()["fields"]} == {"attributes.aum", "attributes.branch"}
    assert "branch" in both.json()["detail"]


async def test_list_is_masked_and_paged(platform: Platform) -> None:
    for i in range(5):
        body = {"name": "欧阳娜娜", "phone": f"1380000000{i}", "email": f"user{i}@example.com"}
        assert (await put(platform, f"C{i}", body)).status_code == 201
    seen: list[dict[str, Any]] = []
    cursor = None
    async with platform.client("analyst") as client:
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/customers", params=params)).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert (await client.get("/v1/customers", params={"cursor": "!!"})).status_code == 422
    assert [c["id"] for c in seen] == ["C0", "C1", "C2", "C3", "C4"]
    assert seen[0]["name"] == "欧***"
    assert seen[0]["phone"] == "138****0000"
    assert seen[0]["email"] == "u***@example.com"
    assert "attributes" not in seen[0]


async def test_erasure_keeps_anonymous_statistics(platform: Platform) -> None:
    await declare(platform)
    await platform.create_scenario()
    reporting_sms(platform)
    assert (await put(platform, "C0001", PROFILE)).status_code == 201
    assert (await put(platform, "C0002", {"phone": "13900000002"})).status_code == 201
    async with platform.client("system") as client:
        ids = []
        for customer in ("C0001", "C0001", "C0002"):
            sent = await client.post(
                "/v1/messages",
                json={
                    "scenario": "account_movement",
                    "customer_id": customer,
                    "variables": VARIABLES,
                    "channels": ["sms"],
                },
            )
            ids.append(sent.json()["id"])
    for message_id in ids:
        await platform.wait_terminal(message_id)
    await sms_reply(platform, "13800000001", "谢谢")
    async with platform.client("marketer") as client:
        assert (await client.delete("/v1/customers/C0001")).status_code == 403
    async with platform.client("system") as client:
        erased = await client.delete("/v1/customers/C0001")
        assert erased.status_code == 200, erased.text
        assert erased.json()["profile_erased"] is True
        assert erased.json()["messages_anonymized"] == 2
        assert (await client.get("/v1/customers/C0001")).status_code == 404
        again = (await client.delete("/v1/customers/C0001")).json()
        assert again["profile_erased"] is False
        assert again["messages_anonymized"] == 0
        stats = [(await client.get(f"/v1/messages/{i}")).json() for i in ids[:2]]
        other = (await client.get(f"/v1/messages/{ids[2]}")).json()
    for message in stats:
        assert message["status"] in ("sent", "delivered")
        assert message["channel"] == "sms"
        assert message["sent_at"] is not None
        assert message["customer_id"].startswith("anon_")
        assert message["recipient"] == {}
        assert message["content"] == {}
    assert stats[0]["customer_id"] == stats[1]["customer_id"]  # still one (anonymous) customer
    assert other["customer_id"] == "C0002"
    assert other["content"]["sms"]["body"]
    dump = await _everything_stored(platform)
    for secret in ("13800000001", "张伟", "zhang.wei", "oDemo0000000000000000000001", "1200000"):
        assert secret not in dump, secret
    assert "13900000002" in dump  # the other customer is untouched


async def _everything_stored(platform: Platform) -> str:
    async with platform.runtime.sessionmaker() as session:
        parts: list[Any] = []
        for model in (Message, MessageEvent, SandboxDelivery, InboundMessage):
            parts += [vars(row) for row in (await session.scalars(select(model))).all()]
    return repr(parts)


async def test_erasure_cancels_unfinished_messages(platform: Platform) -> None:
    await platform.create_scenario()
    request = {
        "scenario": "account_movement",
        "customer_id": "C9",
        "variables": VARIABLES,
        "recipient": {"phone": "13700000000"},
        "send_at": "2099-01-01T00:00:00+08:00",
        "idempotency_key": "txn-9",
    }
    async with platform.client("system") as client:
        sent = await client.post("/v1/messages", json=request)
        erased = (await client.delete("/v1/customers/C9")).json()
        assert erased == {
            "customer_id": "C9",
            "profile_erased": False,
            "messages_anonymized": 1,
            "messages_cancelled": 1,
            "inbound_replies_erased": 0,
            "opt_outs_kept": 0,
        }
        message = (await client.get(f"/v1/messages/{sent.json()['id']}")).json()
        replay = await client.post("/v1/messages", json=request)
        assert replay.status_code == 409  # an erased message is not sent again
    assert message["status"] == "failed"
    assert "erased" in message["status_reason"]
    assert message["recipient"] == {}


OPENID = "oAbCdEfGhIjKlMnOpQrStUvWxYz1"


async def _reply(platform: Platform, channel: str, sender: str, text: str) -> None:
    async with platform.runtime.sessionmaker() as session:
        result = CallbackResult(response_body=b"", media_type="text/plain")
        result.replies.append(InboundReply(sender=sender, text=text))
        await callbacks.apply(session, provider=f"{channel}-x", channel=channel, result=result)
        await session.commit()


async def _replies(platform: Platform) -> list[tuple[str, str, str]]:
    async with platform.runtime.sessionmaker() as session:
        rows = (await session.scalars(select(InboundMessage))).all()
    return sorted((r.channel, r.sender, r.text) for r in rows)


async def test_erasure_takes_the_replies_from_the_customers_openid_and_recipients(
    platform: Platform,
) -> None:
    """Replies from the customer's WeChat openid (even "退订": it changes no consent there),
    and from a number their messages went to inline, go with the erasure; those of another
    customer stay."""
    await platform.create_scenario()
    body = {"name": "张伟", "phone": "13800000001", "wechat_openid": OPENID}
    assert (await put(platform, "C1", body)).status_code == 201
    assert (await put(platform, "C2", {"phone": "13900000009"})).status_code == 201
    send = {"scenario": "account_movement", "variables": VARIABLES, "channels": ["sms"]}
    inline = {**send, "customer_id": "P9001", "recipient": {"phone": "13900000002"}}
    async with platform.client("system") as client:
        assert (await client.post("/v1/messages", json=inline)).status_code == 202
    await _reply(platform, "wechat", OPENID, "我是张伟，身份证110101199001011234")
    await _reply(platform, "wechat", OPENID, "退订")
    await _reply(platform, "sms", "+8613900000002", "这笔1200元不是我花的，我是李娜")
    await _reply(platform, "sms", "13900000009", "谢谢")
    async with platform.client("system") as client:
        first = (await client.delete("/v1/customers/C1")).json()
        second = (await client.delete("/v1/customers/P9001")).json()
    assert first["inbound_replies_erased"] == 2
    assert second["inbound_replies_erased"] == 1
    assert await _replies(platform) == [("sms", "13900000009", "谢谢")]


async def test_an_opt_out_reply_on_wechat_revokes_wechat_marketing(platform: Platform) -> None:
    """ "退订" sent to the Official Account opts the openid's customer out of WeChat
    marketing (it used to be stored as an opt-out and change nothing); SMS stays granted."""
    body = {"phone": "13800000001", "wechat_openid": OPENID}
    assert (await put(platform, "C1", body)).status_code == 201
    await _reply(platform, "wechat", OPENID, "退订。")
    async with platform.client("system") as client:
        consent = (await client.get("/v1/customers/C1")).json()["consent"]
    assert consent["wechat"]["marketing"]["granted"] is False
    assert consent["wechat"]["marketing"]["source"] == "wechat_reply:wechat-x"
    assert consent["sms"]["marketing"]["granted"] is True


async def test_erasure_masks_the_customers_number_in_kept_reasons(platform: Platform) -> None:
    """A provider's text kept as the reason of a failed message names the customer's number
    in a form that masking free text cannot tell from other digits: the erasure masks it."""
    reporting_sms(platform)
    await platform.create_scenario()
    assert (await put(platform, "C1", {"phone": "85291234567"})).status_code == 201
    send = {"scenario": "account_movement", "customer_id": "C1", "variables": VARIABLES}
    async with platform.client("system") as client:
        message_id = (await client.post("/v1/messages", json={**send, "channels": ["sms"]})).json()[
            "id"
        ]
    sent = await platform.wait_terminal(message_id)
    receipt = {
        "message_id": message_id,
        "provider_message_id": sent["provider_message_id"],
        "delivered": False,
        "code": "UNDELIV",
        "detail": "MT to 85291234567 rejected",
    }
    async with platform.client(None) as client:
        reported = await client.post(
            "/v1/callbacks/reporting-sms",
            params={"token": ReportingProvider.TOKEN},
            json={"receipts": [receipt]},
        )
        assert reported.status_code == 200, reported.text
    async with platform.client("system") as client:
        assert "85291234567" in (await client.get(f"/v1/messages/{message_id}")).text
        assert (await client.delete("/v1/customers/C1")).status_code == 200
    async with platform.client("analyst") as client:
        kept = (await client.get(f"/v1/messages/{message_id}")).json()
    assert kept["status"] == "failed"
    assert "852****4567" in kept["status_reason"]
    assert "85291234567" not in kept["status_reason"]
