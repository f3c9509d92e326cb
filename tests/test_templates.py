"""The templates API: versions, publishing, immutability, preview; sends record the version."""

from __future__ import annotations

from typing import Any

import httpx

from app.customers import repository as customers
from tests.conftest import SCENARIO, VARIABLES, Platform
from tests.test_template_rendering import INJECTIONS

SMS_VARIABLES = [
    {"name": "account_tail", "type": "string"},
    {"name": "amount", "type": "decimal"},
    {"name": "at", "type": "datetime"},
]
SMS_BODY = (
    "【示例银行】您尾号{{ account_tail }}的账户{{ at|datetime('%m月%d日%H:%M') }}"
    "支出{{ amount|money }}"
)


async def _create(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    body = {"key": "movement_sms", "channel": "sms", "variables": SMS_VARIABLES, **changes}
    response = await client.post("/v1/templates", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def _publish(client: httpx.AsyncClient, key: str, version: int) -> dict[str, Any]:
    response = await client.post(f"/v1/templates/{key}/versions/{version}/publish")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_versions_drafts_publish_and_immutability(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        created = await _create(client, name="动账短信")
        assert created["current_version"] is None
        assert created["latest_version"] == 0
        assert created["name"] == "动账短信"
        assert (await client.post("/v1/templates", json=created | {"id": None})).status_code == 422
        duplicate = await client.post(
            "/v1/templates", json={"key": "movement_sms", "channel": "sms"}
        )
        assert duplicate.status_code == 409
        assert "/v1/templates/movement_sms/versions" in duplicate.json()["detail"]

        draft = await client.post(
            "/v1/templates/movement_sms/versions",
            json={"content": {"body": "尾号{{ account_tail }}"}},
        )
        assert draft.status_code == 201, draft.text
        assert draft.json()["version"] == 1
        assert draft.json()["status"] == "draft"
        assert draft.json()["variables"] == [{**v, "description": None} for v in SMS_VARIABLES]
        edited = await client.put(
            "/v1/templates/movement_sms/versions/1", json={"content": {"body": SMS_BODY}}
        )
        assert edited.status_code == 200
        assert edited.json()["content"]["body"] == SMS_BODY
        published = await _publish(client, "movement_sms", 1)
        assert published["status"] == "published"
        assert published["published_at"] is not None
        assert (await _publish(client, "movement_sms", 1))["version"] == 1  # a safe retry

        frozen = await client.put(
            "/v1/templates/movement_sms/versions/1", json={"content": {"body": "改了"}}
        )
        assert frozen.status_code == 409
        assert frozen.json()["error"] == "Conflict"
        assert "published and cannot change" in frozen.json()["detail"]
        assert '"from_version": 1' in frozen.json()["detail"]

        copy = await client.post("/v1/templates/movement_sms/versions", json={"from_version": 1})
        assert copy.json()["version"] == 2
        assert copy.json()["content"]["body"] == SMS_BODY
        third = await client.post(
            "/v1/templates/movement_sms/versions", json={"content": {"body": "v3 {{ amount }}"}}
        )
        assert third.json()["version"] == 3
        await _publish(client, "movement_sms", 3)
        stale = await client.post("/v1/templates/movement_sms/versions/2/publish")
        assert stale.status_code == 409
        assert "version 3" in stale.json()["detail"]

        template = (await client.get("/v1/templates/movement_sms")).json()
        assert template["current_version"] == 3
        assert template["latest_version"] == 3
        assert template["current"]["content"]["body"] == "v3 {{ amount }}"
        assert (await client.get("/v1/templates/movement_sms/versions/1")).json()["content"][
            "body"
        ] == SMS_BODY

        page = (await client.get("/v1/templates/movement_sms/versions?limit=2")).json()
        assert [v["version"] for v in page["items"]] == [3, 2]
        rest = await client.get(
            f"/v1/templates/movement_sms/versions?limit=2&cursor={page['next_cursor']}"
        )
        assert [v["version"] for v in rest.json()["items"]] == [1]
        assert rest.json()["next_cursor"] is None

        missing = [
            await client.get("/v1/templates/nope"),
            await client.get("/v1/templates/movement_sms/versions/9"),
            await client.put(
                "/v1/templates/movement_sms/versions/9", json={"content": {"body": "x"}}
            ),
            await client.post("/v1/templates/nope/versions/1/publish"),
        ]
        assert [r.status_code for r in missing] == [404, 404, 404, 404]
        bad = await client.post("/v1/templates/movement_sms/versions", json={"from_version": 7})
        assert bad.status_code == 422
        assert bad.json()["fields"][0]["field"] == "from_version"
    async with platform.client("analyst") as client:
        assert (await client.get("/v1/templates/movement_sms")).status_code == 200
        assert (
            await client.post("/v1/templates/movement_sms/versions/2/publish")
        ).status_code == 403


async def test_list_templates_by_key_and_channel(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        for key, channel in (("b_sms", "sms"), ("a_mail", "email"), ("c_sms", "sms")):
            await _create(client, key=key, channel=channel)
        first = (await client.get("/v1/templates?limit=2")).json()
        assert [t["key"] for t in first["items"]] == ["a_mail", "b_sms"]
        second = (await client.get(f"/v1/templates?limit=2&cursor={first['next_cursor']}")).json()
        assert [t["key"] for t in second["items"]] == ["c_sms"]
        assert second["next_cursor"] is None
        sms = (await client.get("/v1/templates?channel=sms")).json()
        assert [t["key"] for t in sms["items"]] == ["b_sms", "c_sms"]
        assert (await client.get("/v1/templates?cursor=%%%")).status_code == 422


async def test_content_must_fit_the_channel(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        wrong = await client.post(
            "/v1/templates",
            json={"key": "x_sms", "channel": "sms", "content": {"body": "x", "html": "<p>"}},
        )
        assert wrong.status_code == 422
        assert "html belongs in the email template" in wrong.json()["detail"]
        await _create(client, key="mail", channel="email")
        no_subject = await client.post(
            "/v1/templates/mail/versions", json={"content": {"body": "x"}}
        )
        assert no_subject.status_code == 422
        assert no_subject.json()["fields"][0]["field"] == "content.subject"


async def test_publishing_refuses_broken_templates(platform: Platform) -> None:
    cases = {
        "{{ amount": ("content.body", "does not compile"),
        "{{ branch }}": ("content.body", "undeclared variable(s) 'branch'"),
        "{{ amount|currency }}": ("content.body", "unknown filter 'currency'"),
    }
    async with platform.client("marketer") as client:
        await _create(client)
        for number, (body, (field, problem)) in enumerate(cases.items(), start=1):
            draft = await client.post(
                "/v1/templates/movement_sms/versions", json={"content": {"body": body}}
            )
            assert draft.json()["problems"][0]["field"] == field  # told before publishing
            response = await client.post(f"/v1/templates/movement_sms/versions/{number}/publish")
            assert response.status_code == 422, response.text
            error = response.json()
            assert error["error"] == "ValidationError"
            assert error["fields"][0]["field"] == field
            assert problem in error["fields"][0]["message"]
            assert problem in error["detail"]
        provider = await client.post(
            "/v1/templates/movement_sms/versions",
            json={
                "content": {
                    "body": "{{ amount }}",
                    "provider_templates": {
                        "aliyun_sms": {"template_code": "S1", "params": {"a": "{{ nope }}"}}
                    },
                }
            },
        )
        publish = await client.post(
            f"/v1/templates/movement_sms/versions/{provider.json()['version']}/publish"
        )
        assert [f["field"] for f in publish.json()["fields"]] == [
            "content.provider_templates.aliyun_sms.params.a"
        ]
        template = (await client.get("/v1/templates/movement_sms")).json()
        assert template["current_version"] is None


async def test_injection_payloads_are_refused_never_run(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _create(client, key="probe", variables=[{"name": "x"}])
        for number, payload in enumerate(INJECTIONS, start=1):
            draft = await client.post(
                "/v1/templates/probe/versions", json={"content": {"body": payload}}
            )
            assert draft.status_code == 201, (payload, draft.text)
            publish = await client.post(f"/v1/templates/probe/versions/{number}/publish")
            assert publish.status_code == 422, (payload, publish.text)
            preview = await client.post(
                "/v1/templates/preview",
                json={
                    "draft": {
                        "channel": "sms",
                        "variables": [{"name": "x"}],
                        "content": {"body": payload},
                    },
                    "variables": {"x": "1"},
                },
            )
            assert preview.status_code == 422, (payload, preview.text)
            inline = await client.post(
                "/v1/scenarios",
                json={
                    **SCENARIO,
                    "key": "probe",
                    "channels": ["sms"],
                    "templates": {"sms": {"body": payload}},
                },
            )
            assert inline.status_code == 422, (payload, inline.text)
            assert inline.json()["fields"][0]["field"] == "templates.sms.body"
    # data is never a template: a payload in a variable is printed as it is
    await platform.create_scenario()
    async with platform.client("system") as client:
        sent = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": {**VARIABLES, "account_tail": "{{ ''.__class__ }}"},
                "recipient": {"phone": "13800001234"},
            },
        )
    message = await platform.wait_terminal(sent.json()["id"])
    assert "{{ ''.__class__ }}" in message["content"]["sms"]["body"]


async def test_preview_reports_sms_length_and_segments(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _create(client, content={"body": SMS_BODY})
        sample = {"account_tail": "1234", "amount": "-1200.5", "at": "2025-01-01T01:30:00Z"}
        by_key = await client.post(
            "/v1/templates/preview", json={"key": "movement_sms", "variables": sample}
        )
        assert by_key.status_code == 200, by_key.text
        result = by_key.json()
        assert result["version"] == 1  # no published version yet: the newest draft
        expected = "【示例银行】您尾号1234的账户01月01日09:30支出-¥1,200.50"
        assert result["content"]["body"] == expected
        assert result["sms"] == {
            "text": expected,
            "encoding": "UCS-2",
            "characters": len(expected),
            "segments": 1,
            "per_segment": 70,
        }

        long_text = "您好" * 40  # 80 Chinese characters: two parts of 67
        draft = {"channel": "sms", "content": {"body": long_text}}
        signed = await client.post(
            "/v1/templates/preview", json={"draft": draft, "signature": "示例银行"}
        )
        assert signed.json()["sms"]["text"] == "【示例银行】" + long_text
        assert signed.json()["sms"]["characters"] == 86
        assert signed.json()["sms"]["segments"] == 2
        assert signed.json()["sms"]["per_segment"] == 67
        latin = {"channel": "sms", "content": {"body": "Your code is 1234." * 9}}  # 162
        gsm = (await client.post("/v1/templates/preview", json={"draft": latin})).json()["sms"]
        assert (gsm["encoding"], gsm["characters"], gsm["segments"]) == ("GSM-7", 162, 2)
        short = {"channel": "sms", "content": {"body": "Code 1234"}}
        gsm = (await client.post("/v1/templates/preview", json={"draft": short})).json()["sms"]
        assert (gsm["encoding"], gsm["segments"], gsm["per_segment"]) == ("GSM-7", 1, 160)

        mistyped = await client.post(
            "/v1/templates/preview",
            json={"key": "movement_sms", "variables": {**sample, "amount": 12.5}},
        )
        assert mistyped.status_code == 422
        assert mistyped.json()["fields"][0]["field"] == "variables.amount"
        both = await client.post("/v1/templates/preview", json={"key": "a_b", "draft": draft})
        assert both.status_code == 422
        no_zone = await client.post(
            "/v1/templates/preview", json={"draft": draft, "timezone": "Mars/Base"}
        )
        assert no_zone.status_code == 422
        assert no_zone.json()["fields"][0]["field"] == "timezone"
        missing = await client.post("/v1/templates/preview", json={"key": "nope"})
        assert missing.status_code == 404


async def test_preview_of_email_and_wechat(platform: Platform) -> None:
    email = {
        "channel": "email",
        "variables": [{"name": "name"}, {"name": "amount", "type": "decimal"}],
        "content": {
            "subject": "{{ name|mask_name }}：工资到账",
            "body": "{{ name }} {{ amount|money }}",
            "html": "<p>{{ name }} <b>{{ amount|money }}</b></p>",
        },
    }
    wechat = {
        "channel": "wechat",
        "variables": [{"name": "card"}, {"name": "amount", "type": "decimal"}],
        "content": {
            "body": "{{ card|tail }}",
            "wechat": {
                "template_id": "TPL-1",
                "fields": {"keyword1": "{{ card|tail }}", "keyword2": "{{ amount|money }}"},
                "url": "https://bank.example/m?c={{ card|tail(4, '')|urlencode }}",
                "miniprogram": {"appid": "wx123", "pagepath": "pages/index"},
            },
        },
    }
    async with platform.client("marketer") as client:
        mail = await client.post(
            "/v1/templates/preview",
            json={"draft": email, "variables": {"name": "张<三>", "amount": "15000"}},
        )
        assert mail.status_code == 200, mail.text
        content = mail.json()["content"]
        assert content["subject"] == "张***：工资到账"  # 张<三>: four characters
        assert content["body"] == "张<三> ¥15,000.00"
        assert content["html"] == "<p>张&lt;三&gt; <b>¥15,000.00</b></p>"
        assert mail.json()["sms"] is None
        wx = await client.post(
            "/v1/templates/preview",
            json={"draft": wechat, "variables": {"card": "6222021001121234", "amount": "9.9"}},
        )
        assert wx.json()["content"]["data"] == {"keyword1": "尾号1234", "keyword2": "¥9.90"}
        assert wx.json()["content"]["url"] == "https://bank.example/m?c=1234"
        assert wx.json()["content"]["miniprogram"] == {"appid": "wx123", "pagepath": "pages/index"}


async def test_messages_record_the_template_version_they_used(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _create(client, content={"body": SMS_BODY})
        await _publish(client, "movement_sms", 1)
        scenario = await client.post(
            "/v1/scenarios",
            json={
                **SCENARIO,
                "channels": ["sms", "email"],
                "required_variables": SMS_VARIABLES,
                "templates": {"sms": "movement_sms", "email": SCENARIO["templates"]["email"]},
            },
        )
        assert scenario.status_code == 201, scenario.text
        assert scenario.json()["templates"]["sms"]["key"] == "movement_sms"
        assert scenario.json()["templates"]["sms"]["version"] == 1
        assert scenario.json()["templates"]["email"]["key"] == "account_movement.email"
    async with platform.runtime.sessionmaker() as session:
        await customers.upsert(session, "C9", phone="13800009999", timezone="Europe/London")
        await session.commit()
    variables = {**VARIABLES, "at": "2025-01-01T01:30:00Z"}

    async def send() -> dict[str, Any]:
        async with platform.client("system") as client:
            response = await client.post(
                "/v1/messages",
                json={"scenario": "account_movement", "customer_id": "C9", "variables": variables},
            )
        assert response.status_code == 202, response.text
        return await platform.wait_terminal(response.json()["id"])

    first = await send()
    assert first["decision"]["templates"] == {"sms": {"key": "movement_sms", "version": 1}}
    # the customer's time zone: 01:30 UTC is 01:30 in London in winter
    assert first["content"]["sms"]["body"] == (
        "【示例银行】您尾号1234的账户01月01日01:30支出¥1,200.00"
    )
    async with platform.client("marketer") as client:
        await client.post(
            "/v1/templates/movement_sms/versions",
            json={"content": {"body": "【示例银行】v2 {{ amount|money }}"}},
        )
        draft_only = await send()  # a draft changes nothing
        assert draft_only["decision"]["templates"]["sms"]["version"] == 1
        await _publish(client, "movement_sms", 2)
    second = await send()  # this process sees the publish at once
    assert second["decision"]["templates"] == {"sms": {"key": "movement_sms", "version": 2}}
    assert second["content"]["sms"]["body"] == "【示例银行】v2 ¥1,200.00"
    async with platform.client("marketer") as client:
        shown = (await client.get("/v1/scenarios/account_movement")).json()
    assert shown["templates"]["sms"]["version"] == 2


async def test_scenario_references_are_checked(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _create(client, key="mail", channel="email")
        cases = {
            "nope": "no template 'nope'",
            "mail": "is for email, not sms",
        }
        for key, problem in cases.items():
            response = await client.post(
                "/v1/scenarios",
                json={**SCENARIO, "channels": ["sms"], "templates": {"sms": {"key": key}}},
            )
            assert response.status_code == 422
            assert response.json()["fields"][0]["field"] == "templates.sms"
            assert problem in response.json()["detail"]
        # an unchanged inline template keeps its version; a changed one gets a new version
        await platform.create_scenario()
        await client.put(
            "/v1/scenarios/account_movement",
            json={k: v for k, v in SCENARIO.items() if k != "key"},
        )
        same = (await client.get("/v1/templates/account_movement.sms")).json()
        assert same["current_version"] == 1
        changed = {**SCENARIO["templates"], "sms": {"body": "新 {{ amount|money }}"}}
        update = {k: v for k, v in SCENARIO.items() if k != "key"} | {"templates": changed}
        await client.put("/v1/scenarios/account_movement", json=update)
        versions = (await client.get("/v1/templates/account_movement.sms/versions")).json()
        assert [(v["version"], v["status"]) for v in versions["items"]] == [
            (2, "published"),
            (1, "published"),
        ]
