"""The lookups a group of sends makes on SQLite as driver SQL (db.sqlite_select_in: the ids
as one JSON parameter) read exactly what their Core statements read: customers' consent
decisions and the latest SMS opt-out reply of each number."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from app.callbacks import repository as callbacks_repository
from app.customers import repository as customers_repository
from app.customers.models import Customer, CustomerConsent
from app.messages.models import InboundMessage
from app.runtime import Runtime

NOW = datetime(2026, 12, 7, 8, 30, 12, 345678, tzinfo=UTC)


async def test_consents_of_reads_on_sqlite_what_the_core_statement_reads(
    idle_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(3)
    customers = [f"K{i:03d}" for i in range(40)]
    consents = [
        {
            "customer_id": customer,
            "channel": channel,
            "purpose": purpose,
            "granted": rng.random() < 0.5,
            "source": rng.choice(["api:crm", "sms_reply:aliyun-main", "导入"]),
            "updated_at": NOW - timedelta(seconds=rng.randrange(10**6), microseconds=n),
        }
        for n, customer in enumerate(customers[:30])
        for channel in ("sms", "email", "wechat")
        for purpose in ("marketing", "transactional")
        if rng.random() < 0.6
    ]
    async with idle_runtime.sessionmaker() as session:
        await session.execute(insert(Customer), [_customer(c) for c in customers])
        await session.execute(insert(CustomerConsent), consents)
        await session.commit()
    wanted = [*rng.sample(customers, 25), "K000", "nobody", "K000"]

    async def both() -> list[Any]:
        async with idle_runtime.sessionmaker() as session:
            return [await customers_repository.consents_of(session, ids) for ids in ([], wanted)]

    mine = await both()
    monkeypatch.setattr(customers_repository, "dialect_name", lambda _: "core")
    core = await both()
    assert mine == core
    assert sum(len(rows) for rows in mine[1].values()) > 20
    assert all(type(granted) is bool for rows in mine[1].values() for _, _, granted, _, _ in rows)
    assert all(at.tzinfo is UTC for rows in mine[1].values() for *_, at in rows)


async def test_sms_opt_outs_read_on_sqlite_what_the_core_statement_reads(
    idle_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    keys = [f"1390000{i:04d}" for i in range(30)]
    replies = [
        {
            "id": f"in_{n:04d}",
            "provider": "aliyun-main",
            "channel": rng.choice(["sms", "sms", "wechat"]),
            "sender": key,
            "sender_key": key if n % 17 else None,
            "text": "退订" if n % 3 else "谢谢",
            "opt_out": n % 3 != 0,
            "received_at": NOW - timedelta(minutes=rng.randrange(10**4), microseconds=n),
        }
        for n, key in enumerate(rng.choice(keys) for _ in range(200))
    ]
    async with idle_runtime.sessionmaker() as session:
        await session.execute(insert(InboundMessage), replies)
        await session.commit()
    wanted = [*rng.sample(keys, 20), "13900000000", keys[0]]

    async def both() -> list[Any]:
        async with idle_runtime.sessionmaker() as session:
            lookup = callbacks_repository.sms_opt_outs
            return [await lookup(session, ids) for ids in ([], wanted)]

    mine = await both()
    monkeypatch.setattr(callbacks_repository, "dialect_name", lambda _: "core")
    core = await both()
    assert mine == core
    assert len(mine[1]) > 10
    assert all(at.tzinfo is UTC for at in mine[1].values())


def _customer(customer_id: str) -> dict[str, Any]:
    return {"id": customer_id, "attributes": {}, "created_at": NOW, "updated_at": NOW}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_get_many_reads_the_customers_the_orm_reads(platform: Any) -> None:
    """The send path's customers (views read without the ORM, on SQLite by driver SQL) hold
    what the ORM loads: contacts, locale, time zone, attributes (nested, Chinese) and tags."""
    rng = random.Random(9)
    rows = []
    for i in range(30):
        row = _customer(f"V{i:02d}")
        row |= {
            "name": None if i % 4 == 0 else f"客户{i}",
            "phone": None if i % 3 == 0 else f"1390000{i:04d}",
            "email": f"v{i}@example.com" if i % 2 else None,
            "wechat_openid": f"oAbc{i:020d}" if i % 5 else None,
            "timezone": rng.choice(["Asia/Shanghai", "Asia/Hong_Kong", "UTC"]),
            "attributes": {"aum": str(rng.randrange(10**7)), "tier": "私行", "n": [1, None, 2.5]},
            "tags": sorted(rng.sample(["vip", "代发", "new"], rng.randrange(4))),
        }
        rows.append(row)
    async with platform.runtime.sessionmaker() as session:
        await session.execute(insert(Customer), rows)
        await session.commit()
    wanted = [*rng.sample([r["id"] for r in rows], 20), "nobody", "V01"]
    async with platform.runtime.sessionmaker() as session:
        views = await customers_repository.get_many(session, wanted)
        stored = {c: await customers_repository.get(session, c) for c in set(wanted)}
    assert set(views) == {c for c, s in stored.items() if s is not None}
    for customer_id, view in views.items():
        orm = stored[customer_id]
        assert orm is not None
        for field in ("name", "phone", "email", "wechat_openid", "locale", "timezone", "tags"):
            assert getattr(view, field) == getattr(orm, field), field
        assert view.attributes == orm.attributes
        assert view.id == customer_id
