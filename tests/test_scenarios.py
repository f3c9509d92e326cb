from __future__ import annotations

from typing import Any

from tests.conftest import SCENARIO, VARIABLES, Platform


async def test_scenario_crud_and_validation(platform: Platform) -> None:
    created = await platform.create_scenario()
    assert created["class"] == "transactional"
    assert created["templates"]["email"]["subject"] == "账户变动 {{ account_tail }}"
    assert created["required_variables"][1] == {
        "name": "amount",
        "type": "decimal",
        "description": None,
    }
    async with platform.client("marketer") as client:
        dup = await client.post("/v1/scenarios", json=SCENARIO)
        assert dup.status_code == 409
        bad_cases: list[tuple[dict[str, Any], str]] = [
            (
                {
                    **SCENARIO,
                    "key": "x2",
                    "templates": {"sms": {"body": "{{ broken"}},
                    "channels": ["sms"],
                },
                "templates.sms.body",
            ),
            ({**SCENARIO, "key": "x3", "channels": ["sms", "sms"]}, "channels"),
            ({**SCENARIO, "key": "x4", "channels": ["sms", "fax"]}, "channels.1"),
            ({**SCENARIO, "key": "x5", "class": "promo"}, "class"),
            ({**SCENARIO, "key": "Bad Key"}, "key"),
            ({**SCENARIO, "key": "x6", "channels": ["sms"]}, "body"),
        ]
        for body, field in bad_cases:
            response = await client.post("/v1/scenarios", json=body)
            assert response.status_code == 422, (body, response.text)
            assert any(f["field"].startswith(field) for f in response.json()["fields"]), (
                response.json()
            )
        listed = (await client.get("/v1/scenarios")).json()
        assert [s["key"] for s in listed["items"]] == ["account_movement"]
        assert (await client.get("/v1/scenarios/nope")).status_code == 404
        update = {k: v for k, v in SCENARIO.items() if k != "key"}
        update["templates"] = {**SCENARIO["templates"], "sms": {"body": "新版 {{ amount }}"}}
        replaced = await client.put("/v1/scenarios/account_movement", json=update)
        assert replaced.status_code == 200
        assert replaced.json()["templates"]["sms"]["body"] == "新版 {{ amount }}"
    async with platform.client("system") as client:
        sent = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": VARIABLES,
                "recipient": {"phone": "13800001234"},
            },
        )
    message = await platform.wait_terminal(sent.json()["id"])
    assert message["content"]["sms"]["body"] == "新版 1200.00"


async def test_inline_template_using_undeclared_variable_is_refused(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        response = await client.post(
            "/v1/scenarios",
            json={
                **SCENARIO,
                "templates": {
                    **SCENARIO["templates"],
                    "sms": {"body": "{{ account_tail }} {{ branch }}"},
                },
            },
        )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "templates.sms.body"
    assert "'branch'" in response.json()["detail"]


async def test_variables_a_template_declares_are_checked_at_send(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        created = await client.post(
            "/v1/templates",
            json={
                "key": "movement_sms",
                "channel": "sms",
                "variables": [{"name": "branch", "type": "string"}],
                "content": {"body": "{{ branch }}: {{ account_tail }}"},
            },
        )
        assert created.status_code == 201, created.text
        unpublished = await client.post(
            "/v1/scenarios",
            json={**SCENARIO, "templates": {**SCENARIO["templates"], "sms": "movement_sms"}},
        )
        assert unpublished.status_code == 422
        assert unpublished.json()["fields"][0]["field"] == "templates.sms"
        assert "no published version" in unpublished.json()["detail"]
        publish = await client.post("/v1/templates/movement_sms/versions/1/publish")
        # account_tail is not declared by the template itself
        assert publish.status_code == 422
        assert "'account_tail'" in publish.json()["detail"]
        await client.put(
            "/v1/templates/movement_sms/versions/1",
            json={
                "variables": [
                    {"name": "branch", "type": "string"},
                    {"name": "account_tail", "type": "string"},
                ],
                "content": {"body": "{{ branch }}: {{ account_tail }}"},
            },
        )
        publish = await client.post("/v1/templates/movement_sms/versions/1/publish")
        assert publish.status_code == 200, publish.text
    await platform.create_scenario(
        templates={**SCENARIO["templates"], "sms": {"key": "movement_sms"}}
    )
    async with platform.client("system") as client:
        body = {
            "scenario": "account_movement",
            "customer_id": "C1",
            "variables": VARIABLES,
            "recipient": {"phone": "13800001234"},
        }
        response = await client.post("/v1/messages", json=body)
        assert response.status_code == 422
        assert response.json()["fields"] == [
            {"field": "variables.branch", "message": "required by the scenario"}
        ]
        body["variables"] = {**VARIABLES, "branch": "浦东支行"}
        sent = await client.post("/v1/messages", json=body)
        assert sent.status_code == 202, sent.text
    message = await platform.wait_terminal(sent.json()["id"])
    assert message["content"]["sms"]["body"] == "浦东支行: 1234"
    assert message["decision"]["templates"]["sms"] == {"key": "movement_sms", "version": 1}


async def test_channel_specifics_render_into_the_content(platform: Platform) -> None:
    templates = {
        "wechat": {
            "body": "尾号{{ account_tail }}支出{{ amount }}元",
            "wechat": {
                "template_id": "TPL-movement",
                "fields": {"keyword1": "尾号{{ account_tail }}", "keyword2": "{{ amount }}元"},
                "url": "https://bank.example/m?tail={{ account_tail }}",
            },
        },
        "sms": {
            "body": "【示例银行】尾号{{ account_tail }}支出{{ amount }}元",
            "provider_templates": {
                "aliyun_sms": {"template_code": "SMS_1", "params": {"tail": "{{ account_tail }}"}},
            },
        },
        "email": {
            "subject": "通知",
            "body": "支出{{ amount }}",
            "html": "<p>支出<b>{{ amount }}</b>{{ account_tail }}</p>",
        },
    }
    created = await platform.create_scenario(templates=templates)
    assert (
        created["templates"]["sms"]["provider_templates"]["aliyun_sms"]["template_code"] == "SMS_1"
    )
    async with platform.client("system") as client:
        sent = await client.post(
            "/v1/messages",
            json={
                "scenario": "account_movement",
                "customer_id": "C1",
                "variables": {**VARIABLES, "account_tail": "<12>"},
                "recipient": {
                    "phone": "13800001234",
                    "email": "a@example.com",
                    "wechat_openid": "oAbcd1234567890123456789wxyz",
                },
            },
        )
    message = await platform.wait_terminal(sent.json()["id"])
    wechat = message["content"]["wechat"]
    assert wechat["template_id"] == "TPL-movement"
    assert wechat["data"] == {"keyword1": "尾号<12>", "keyword2": "1200.00元"}
    assert wechat["url"] == "https://bank.example/m?tail=<12>"
    assert message["content"]["sms"]["provider_templates"] == {
        "aliyun_sms": {"template_code": "SMS_1", "params": {"tail": "<12>"}}
    }
    assert message["content"]["email"]["html"] == "<p>支出<b>1200.00</b>&lt;12&gt;</p>"
    assert "marketing" not in message["content"]["email"]


async def test_channel_specifics_are_checked(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        misplaced = await client.post(
            "/v1/scenarios",
            json={
                **SCENARIO,
                "templates": {**SCENARIO["templates"], "sms": {"body": "x", "html": "<p>x</p>"}},
            },
        )
        assert misplaced.status_code == 422
        assert "html belongs in the email template" in misplaced.json()["detail"]
        broken = await client.post(
            "/v1/scenarios",
            json={
                **SCENARIO,
                "templates": {
                    **SCENARIO["templates"],
                    "sms": {
                        "body": "x",
                        "provider_templates": {
                            "aliyun_sms": {"template_code": "S", "params": {"a": "{{"}}
                        },
                    },
                },
            },
        )
        assert broken.status_code == 422
        fields = [f["field"] for f in broken.json()["fields"]]
        assert fields == ["templates.sms.provider_templates.aliyun_sms.params.a"]
