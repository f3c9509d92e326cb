"""Segments and strategies through the API: validation against the attribute schema, counts
and samples by SQL, references, explain and dry run."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.conftest import Platform
from tests.test_customers import reporting_sms, sms_reply

HIGH = {
    "all": [
        {"field": "aum", "op": "gte", "value": 500000},
        {"not": {"field": "tags", "op": "contains", "value": "staff"}},
    ]
}
LOW = {"field": "aum", "op": "lt", "value": 50000}
CUSTOMERS = {
    "R1": {"aum": "800000", "tags": ["payroll"]},
    "R2": {"aum": "2500000.50", "tags": []},
    "S1": {"aum": "900000", "tags": ["staff"]},
    "L1": {"aum": "12000", "tags": []},
    "M1": {"aum": "120000", "tags": []},
}


async def _seed(client: httpx.AsyncClient) -> None:
    for name, type_ in (("aum", "number"), ("tier", "string")):
        response = await client.put(f"/v1/customer-attributes/{name}", json={"type": type_})
        assert response.status_code in (200, 201), response.text
    for cid, data in CUSTOMERS.items():
        body = {
            "name": "张伟",
            "phone": f"1380000{cid[-1]}{len(cid)}00",
            "attributes": {"aum": data["aum"]},
            "tags": data["tags"],
        }
        response = await client.put(f"/v1/customers/{cid}", json=body)
        assert response.status_code in (200, 201), response.text


async def _template(client: httpx.AsyncClient, key: str, body: str) -> None:
    created = await client.post(
        "/v1/templates",
        json={"key": key, "channel": "sms", "content": {"body": body}},
    )
    assert created.status_code == 201, created.text
    published = await client.post(f"/v1/templates/{key}/versions/1/publish")
    assert published.status_code == 200, published.text


async def _setup(platform: Platform, client: httpx.AsyncClient) -> None:
    await platform.create_scenario()
    await _seed(client)
    for key, rule in (("high_net_worth", HIGH), ("low_net_worth", LOW)):
        response = await client.post("/v1/segments", json={"key": key, "rule": rule})
        assert response.status_code == 201, response.text
    await _template(client, "wealth_patch.sms", "稳健理财年化3.2%")
    await _template(client, "loan_patch.sms", "您有一笔预授信贷款额度")
    for key, segment, template, priority in (
        ("wealth", "high_net_worth", "wealth_patch.sms", 1),
        ("loan", "low_net_worth", "loan_patch.sms", 2),
    ):
        body: dict[str, Any] = {
            "key": key,
            "scenario": "account_movement",
            "segment": segment,
            "patch_templates": {"sms": template},
            "priority": priority,
            "status": "active",
        }
        response = await client.post("/v1/strategies", json=body)
        assert response.status_code == 201, response.text


async def test_segments_validate_count_and_sample(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _seed(client)
        bad = await client.post(
            "/v1/segments",
            json={"key": "typo", "rule": {"field": "aun", "op": "gte", "value": 1}},
        )
        assert bad.status_code == 422
        assert bad.json()["fields"][0]["field"].startswith("rule")
        assert "aun" in bad.json()["detail"]
        mismatch = await client.post(
            "/v1/segments",
            json={"key": "typo", "rule": {"field": "tags", "op": "gte", "value": 1}},
        )
        assert mismatch.status_code == 422
        created = await client.post("/v1/segments", json={"key": "high_net_worth", "rule": HIGH})
        assert created.status_code == 201, created.text
        assert created.json()["fields"] == ["aum", "tags"]
        again = await client.post("/v1/segments", json={"key": "high_net_worth", "rule": HIGH})
        assert again.status_code == 409
        count = await client.get("/v1/segments/high_net_worth/count")
        assert count.json() == {"key": "high_net_worth", "count": 2}  # R1, R2; S1 is staff
        sample = (await client.get("/v1/segments/high_net_worth/sample?size=5")).json()
        assert sorted(c["id"] for c in sample["items"]) == ["R1", "R2"]
        assert all(c["name"] == "张*" and "****" in c["phone"] for c in sample["items"])
        replaced = await client.put("/v1/segments/high_net_worth", json={"rule": LOW})
        assert replaced.status_code == 200
        assert (await client.get("/v1/segments/high_net_worth/count")).json()["count"] == 1
        assert (await client.get("/v1/segments/nope/count")).status_code == 404


async def test_strategies_check_their_references(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        base = {
            "key": "broken",
            "scenario": "account_movement",
            "segment": "high_net_worth",
            "patch_templates": {"sms": "wealth_patch.sms"},
        }
        for change, field in (
            ({"scenario": "nope"}, "scenario"),
            ({"segment": "nope"}, "segment"),
            ({"patch_templates": {"sms": "missing.sms"}}, "patch_templates.sms"),
            ({"patch_templates": {"email": "wealth_patch.sms"}}, "patch_templates.email"),
        ):
            response = await client.post("/v1/strategies", json=base | change)
            assert response.status_code == 422, (change, response.text)
            assert response.json()["fields"][0]["field"] == field
        window = base | {"starts_at": "2026-12-01T00:00:00Z", "ends_at": "2026-11-01T00:00:00Z"}
        assert (await client.post("/v1/strategies", json=window)).status_code == 422
        used = await client.delete("/v1/segments/high_net_worth")
        assert used.status_code == 409
        listed = (await client.get("/v1/strategies?scenario=account_movement")).json()
        assert [s["key"] for s in listed["items"]] == ["loan", "wealth"]


async def test_explain_shows_every_strategy_verdict_per_channel(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        at = "2026-11-23T02:00:00Z"  # 10:00 in Shanghai: outside quiet hours
        rich = await client.post(
            "/v1/strategies/explain",
            json={"scenario": "account_movement", "customer_id": "R1", "at": at},
        )
        assert rich.status_code == 200, rich.text
        sms = next(c for c in rich.json()["channels"] if c["channel"] == "sms")
        assert sms["strategy"] == "wealth"
        assert sms["patch_template"] == "wealth_patch.sms"
        assert [(e["strategy"], e["reason"]) for e in sms["evaluations"]] == [
            ("wealth", "matched"),
            ("loan", "not_tried"),
        ]
        wechat = next(c for c in rich.json()["channels"] if c["channel"] == "wechat")
        assert wechat["strategy"] is None  # no patch template for WeChat
        assert wechat["evaluations"][0]["reason"] == "channel_not_allowed"

        staff = await client.post(
            "/v1/strategies/explain",
            json={"scenario": "account_movement", "customer_id": "S1", "at": at},
        )
        sms = next(c for c in staff.json()["channels"] if c["channel"] == "sms")
        assert sms["no_patch"] == "no_strategy"
        assert sms["evaluations"][0]["reason"] == "segment_not_matched"

        night = await client.post(
            "/v1/strategies/explain",
            json={
                "scenario": "account_movement",
                "customer_id": "L1",
                "at": "2026-11-23T14:00:00Z",
            },
        )
        assert {c["no_patch"] for c in night.json()["channels"]} == {"quiet_hours"}

        opted = await client.post("/v1/customers/R1/opt-out", json={"channel": "sms"})
        assert opted.status_code == 200, opted.text
        after = await client.post(
            "/v1/strategies/explain",
            json={"scenario": "account_movement", "customer_id": "R1", "at": at},
        )
        sms = next(c for c in after.json()["channels"] if c["channel"] == "sms")
        assert sms["no_patch"] == "opted_out"

        inline = await client.post(
            "/v1/strategies/explain",
            json={"scenario": "account_movement", "profile": {"aum": 10}, "at": at},
        )
        sms = next(c for c in inline.json()["channels"] if c["channel"] == "sms")
        assert sms["strategy"] == "loan"
        assert (
            await client.post(
                "/v1/strategies/explain", json={"scenario": "account_movement", "customer_id": "X"}
            )
        ).status_code == 404


async def test_a_dry_run_gives_the_distribution_over_a_sample(platform: Platform) -> None:
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        response = await client.post(
            "/v1/strategies/dry-run",
            json={"scenario": "account_movement", "at": "2026-11-23T02:00:00Z"},
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["sampled"] >= len(CUSTOMERS)  # plus any customers the platform seeds
        sms = result["channels"]["sms"]
        assert sms["wealth"] == 2
        assert sms["loan"] == 1
        assert sum(sms.values()) == result["sampled"]
        segment_only = await client.post(
            "/v1/strategies/dry-run",
            json={
                "scenario": "account_movement",
                "segment": "high_net_worth",
                "at": "2026-11-23T02:00:00Z",
            },
        )
        assert segment_only.json()["channels"]["sms"] == {"wealth": 2}


def _outside_quiet_hours(platform: Platform) -> None:
    """Quiet hours that are not now, whatever time the suite runs at."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    marketing = platform.runtime.settings.marketing
    marketing.quiet_hours_start = (local + timedelta(hours=2)).strftime("%H:00")
    marketing.quiet_hours_end = (local + timedelta(hours=3)).strftime("%H:00")


async def _send(platform: Platform, customer_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "scenario": "account_movement",
        "customer_id": customer_id,
        "variables": {"account_tail": "1234", "amount": "1200.00"},
        **extra,
    }
    async with platform.client("system") as client:
        accepted = await client.post("/v1/messages", json=body)
        assert accepted.status_code == 202, accepted.text
        message = await client.get(f"/v1/messages/{accepted.json()['id']}")
    result: dict[str, Any] = message.json()
    return result


async def test_a_send_carries_the_patch_its_segment_chooses(platform: Platform) -> None:
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        opted = await client.post("/v1/customers/R2/opt-out", json={"channel": "sms"})
        assert opted.status_code == 200
    rich = await _send(platform, "R1")
    assert rich["channels"] == ["sms"]  # R1 has a phone only
    assert rich["content"]["sms"]["body"].endswith("稳健理财年化3.2%，拒收请回复R")
    assert rich["decision"]["strategy"] == "wealth"
    sms = rich["decision"]["patch"]["sms"]
    assert sms["composition"]["applied"] is True
    assert sms["composition"]["template"] == {"key": "wealth_patch.sms", "version": 1}
    loan = await _send(platform, "L1")
    assert loan["content"]["sms"]["body"].endswith("您有一笔预授信贷款额度，拒收请回复R")
    staff = await _send(platform, "S1")
    assert "拒收" not in staff["content"]["sms"]["body"]
    assert staff["decision"]["patch"]["sms"]["no_patch"] == "no_strategy"
    opted_out = await _send(platform, "R2")
    assert opted_out["decision"]["patch"]["sms"]["no_patch"] == "opted_out"
    assert "拒收" not in opted_out["content"]["sms"]["body"]
    # an unknown customer decided on an inline profile, which is not stored
    inline = await _send(
        platform, "X9", recipient={"phone": "13900000009"}, profile={"aum": 900000}
    )
    assert inline["decision"]["strategy"] == "wealth"
    async with platform.client("marketer") as client:
        assert (await client.get("/v1/customers/X9")).status_code == 404


async def test_quiet_hours_and_frequency_caps_drop_the_patch_not_the_message(
    platform: Platform,
) -> None:
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        capped = (await client.get("/v1/strategies/wealth")).json()
        body = {
            k: v for k, v in capped.items() if k not in ("id", "key", "created_at", "updated_at")
        }
        body["frequency_cap"] = {"max_patches": 1, "days": 7}
        assert (await client.put("/v1/strategies/wealth", json=body)).status_code == 200
    first = await _send(platform, "R1")
    assert first["decision"]["strategy"] == "wealth"
    await _both_lookups_agree(platform)
    second = await _send(platform, "R1")
    assert second["decision"]["strategy"] is None
    assert second["decision"]["patch"]["sms"]["evaluations"][0]["reason"] == "frequency_capped"
    assert second["status"] in ("queued", "sending", "sent", "delivered")
    marketing = platform.runtime.settings.marketing
    marketing.quiet_hours_start, marketing.quiet_hours_end = "00:00", "00:00"  # all day
    quiet = await _send(platform, "L1")
    assert quiet["decision"]["patch"]["sms"]["no_patch"] == "quiet_hours"
    assert quiet["content"]["sms"]["body"].startswith("【示例银行】您尾号1234")


async def _both_lookups_agree(platform: Platform) -> None:
    """The recent-patch lookup reads the same through its per-customer seeks (a few
    customers) and its batch scan (many)."""
    from datetime import UTC, datetime, timedelta

    from app.strategies import repository

    now = datetime.now(UTC)
    many = ["R1", *(f"Z{i}" for i in range(repository.SEEK_CUSTOMERS + 10))]
    week = timedelta(days=7)
    later = now + timedelta(days=8)  # the patch sent now is more than a week before
    async with platform.runtime.read_sessionmaker() as session:
        few = await repository.recent_patches(session, ["R1", "L1"], at=now, span=week, most=5)
        lots = await repository.recent_patches(session, many, at=now, span=week, most=5)
        none = await repository.recent_patches(session, ["R1"], at=later, span=week, most=5)
        none_either = await repository.recent_patches(session, many, at=later, span=week, most=5)
    assert len(few["R1"]) == 1
    assert few == lots
    assert none == none_either == {}


async def test_an_sms_patch_over_the_length_budget_is_dropped_and_the_notice_sent(
    platform: Platform,
) -> None:
    _outside_quiet_hours(platform)
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        long_body = "尊享理财专属礼遇，" * 12
        await _template(client, "long_patch.sms", long_body)
        current = (await client.get("/v1/strategies/wealth")).json()
        body = {
            k: v for k, v in current.items() if k not in ("id", "key", "created_at", "updated_at")
        }
        body["patch_templates"] = {"sms": "long_patch.sms"}
        assert (await client.put("/v1/strategies/wealth", json=body)).status_code == 200
    message = await _send(platform, "R1")
    composition = message["decision"]["patch"]["sms"]["composition"]
    assert composition["applied"] is False
    assert composition["reason"].startswith("sms_length: ")
    assert composition["budget"] == 2
    assert message["decision"]["strategy"] is None
    assert message["content"]["sms"]["body"] == "【示例银行】您尾号1234的账户支出1200.00元"
    assert message["status"] in ("queued", "sending", "sent", "delivered")


async def test_explain_counts_an_opt_out_reply_sent_before_the_customer_was_recorded(
    platform: Platform,
) -> None:
    reporting_sms(platform)
    await sms_reply(platform, "+8613800001200", "TD")  # R1's number, before R1 exists
    async with platform.client("marketer") as client:
        await _setup(platform, client)
        explained = await client.post(
            "/v1/strategies/explain",
            json={
                "scenario": "account_movement",
                "customer_id": "R1",
                "at": "2026-11-23T02:00:00Z",
            },
        )
        assert explained.status_code == 200, explained.text
        sms = next(c for c in explained.json()["channels"] if c["channel"] == "sms")
        assert sms["no_patch"] == "opted_out"
        email = next(c for c in explained.json()["channels"] if c["channel"] == "email")
        assert email["no_patch"] != "opted_out"


async def _sms_strategy(client: httpx.AsyncClient, key: str, segment: str, patch: str) -> None:
    """An active strategy of account_movement adding ``patch`` to the SMS of ``segment``."""
    await _template(client, f"{key}_patch.sms", patch)
    strategy = {
        "key": key,
        "scenario": "account_movement",
        "segment": segment,
        "patch_templates": {"sms": f"{key}_patch.sms"},
        "priority": 1,
        "status": "active",
    }
    assert (await client.post("/v1/strategies", json=strategy)).status_code == 201


async def test_segments_with_relative_dates(platform: Platform) -> None:
    """ "Opened in the last 90 days" counted by SQL today, and explained at another time."""
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    opened = {"N1": today - timedelta(days=10), "N2": today - timedelta(days=90)}
    opened |= {"O1": today - timedelta(days=91), "O2": today - timedelta(days=400)}
    # N1's birthday is in three days, O1's was yesterday
    born = {
        "N1": (today + timedelta(days=3)).replace(year=1992),
        "O1": today.replace(year=1988),
    }  # leap years: any day fits
    born["O1"] -= timedelta(days=1)
    async with platform.client("marketer") as client:
        await platform.create_scenario()
        for name in ("opened_on", "birthday"):
            created = await client.put(f"/v1/customer-attributes/{name}", json={"type": "date"})
            assert created.status_code in (200, 201), created.text
        for cid, day in opened.items():
            attributes = {"opened_on": str(day)}
            attributes |= {"birthday": str(born[cid])} if cid in born else {}
            body = {"phone": f"1380000{cid[-1]}000", "attributes": attributes}
            response = await client.put(f"/v1/customers/{cid}", json=body)
            assert response.status_code in (200, 201), response.text
        rule = {"field": "opened_on", "op": "gte", "value": {"days": -90}}
        segment = await client.post("/v1/segments", json={"key": "new_customers", "rule": rule})
        assert segment.status_code == 201, segment.text
        assert segment.json()["rule"] == rule  # kept relative, not fixed at creation
        count = await client.get("/v1/segments/new_customers/count")
        assert count.json() == {"key": "new_customers", "count": 2}  # N1, N2
        sample = (await client.get("/v1/segments/new_customers/sample?size=10")).json()
        assert sorted(c["id"] for c in sample["items"]) == ["N1", "N2"]
        week = [{"days": 0}, {"days": 6}]
        birthdays = {"field": "birthday", "op": "anniversary", "value": week}
        segment = await client.post("/v1/segments", json={"key": "birthdays", "rule": birthdays})
        assert segment.status_code == 201, segment.text
        assert (await client.get("/v1/segments/birthdays/count")).json()["count"] == 1  # N1
        wrong = {"field": "opened_on", "op": "gte", "value": {"hours": -1}}
        refused = await client.post("/v1/segments", json={"key": "bad", "rule": wrong})
        assert refused.status_code == 422
        assert refused.json()["fields"][0]["field"] == "rule.value"

        await _sms_strategy(client, "welcome", "new_customers", "新客专享理财")

        async def strategy_at(at: datetime) -> str | None:
            body = {"scenario": "account_movement", "customer_id": "N2", "at": at.isoformat()}
            explained = await client.post("/v1/strategies/explain", json=body)
            assert explained.status_code == 200, explained.text
            sms = next(c for c in explained.json()["channels"] if c["channel"] == "sms")
            return sms["strategy"]  # type: ignore[no-any-return]

        ten = time(10, tzinfo=ZoneInfo("Asia/Shanghai"))  # outside quiet hours
        assert await strategy_at(datetime.combine(today, ten)) == "welcome"
        # the next day, N2 opened 91 days before
        assert await strategy_at(datetime.combine(today + timedelta(days=1), ten)) is None


async def test_a_scheduled_send_decides_relative_segments_for_its_send_time(
    platform: Platform,
) -> None:
    """A birthday-today strategy: not today for B1, whose birthday is in three days, but a
    send scheduled three days ahead carries its patch, as explain at that time says."""
    _outside_quiet_hours(platform)  # neither now nor three days ahead at this time of day
    now = datetime.now(UTC).replace(microsecond=0)
    later = now + timedelta(days=3)
    birthday = later.astimezone(ZoneInfo("Asia/Shanghai")).date().replace(year=1992)
    async with platform.client("marketer") as client:
        await platform.create_scenario()
        created = await client.put("/v1/customer-attributes/birthday", json={"type": "date"})
        assert created.status_code in (200, 201), created.text
        body = {"phone": "13800000001", "attributes": {"birthday": str(birthday)}}
        assert (await client.put("/v1/customers/B1", json=body)).status_code in (200, 201)
        today = {"field": "birthday", "op": "anniversary", "value": [{"days": 0}] * 2}
        segment = {"key": "birthday_today", "rule": today}
        assert (await client.post("/v1/segments", json=segment)).status_code == 201
        await _sms_strategy(client, "birthday", "birthday_today", "生日快乐！生日月理财加息0.5%")
        explained = await client.post(
            "/v1/strategies/explain",
            json={"scenario": "account_movement", "customer_id": "B1", "at": later.isoformat()},
        )
        sms = next(c for c in explained.json()["channels"] if c["channel"] == "sms")
        assert sms["strategy"] == "birthday"
    assert (await _send(platform, "B1"))["decision"]["strategy"] is None
    scheduled = await _send(platform, "B1", send_at=later.isoformat())
    assert scheduled["status"] == "scheduled"
    assert scheduled["decision"]["strategy"] == "birthday"
    assert scheduled["content"]["sms"]["body"].endswith("生日快乐！生日月理财加息0.5%，拒收请回复R")
