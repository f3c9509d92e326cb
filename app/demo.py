"""Demo data for `make run`: an account-movement scenario, customers, segments with their
marketing patches, A/B experiments with a campaign (app/demo_ab.py), and API keys.
Safe to run twice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import demo_ab
from app.auth import repository as keys_repository
from app.auth.schemas import Role
from app.auth.service import create_key
from app.customers import repository as customers
from app.customers import service as customer_service
from app.customers.attributes import AttributeType
from app.customers.schemas import AttributeIn
from app.scenarios import repository as scenarios_repository
from app.scenarios import service as scenarios
from app.scenarios.schemas import Channel, ScenarioCreate, TemplateIn
from app.strategies import repository as strategies_repository
from app.strategies import service as strategies
from app.strategies.schemas import FrequencyCapIn, SegmentIn, StrategyIn, StrategyStatus
from app.timeutil import utcnow
from templates import repository as templates_repository
from templates import service as templates
from templates.schemas import TemplateCreate

ACCOUNT_MOVEMENT = {
    "key": "account_movement",
    "name": "Account movement notice",
    "class": "transactional",
    "channels": ["wechat", "sms", "email"],
    "required_variables": [
        {"name": "account_tail", "type": "string"},
        {"name": "direction", "type": "string", "description": "收入 or 支出"},
        {"name": "amount", "type": "decimal"},
        {"name": "balance", "type": "decimal"},
    ],
    "templates": {
        "wechat": {
            "body": "您尾号{{ account_tail }}的账户{{ direction }}人民币{{ amount }}元，"
            "余额{{ balance }}元。"
        },
        "sms": {
            "body": "【示例银行】您尾号{{ account_tail }}的账户{{ direction }}"
            "人民币{{ amount }}元，余额{{ balance }}元。"
        },
        "email": {
            "subject": "账户变动通知：尾号{{ account_tail }}",
            "body": "您好，您尾号{{ account_tail }}的账户{{ direction }}人民币{{ amount }}元，"
            "余额{{ balance }}元。",
        },
    },
}

CUSTOMERS = [
    {
        "id": "C0001",
        "name": "张伟",
        "phone": "13800000001",
        "email": "zhang.wei@example.com",
        "wechat_openid": "oDemo0000000000000000000001",
        "attributes": {"aum": 1200000, "tier": "private"},
    },
    {
        "id": "C0002",
        "name": "李娜",
        "phone": "13900000002",
        "attributes": {"aum": 8000, "tier": "mass"},
    },
    {
        "id": "C0003",
        "name": "王芳",
        "email": "wang.fang@example.com",
        "attributes": {"aum": 56000, "tier": "mass"},
    },
    {  # lives in New York: outside quiet hours while Shanghai sleeps, so a patch shows
        "id": "C0004",
        "name": "陈静",
        "phone": "13700000004",
        "timezone": "America/New_York",
        "attributes": {"aum": 3000000, "tier": "private"},
    },
    {  # high net worth, but opted out of marketing SMS: never gets a patch
        "id": "C0005",
        "name": "刘洋",
        "phone": "13600000005",
        "attributes": {"aum": 900000, "tier": "affluent"},
    },
]
OPTED_OUT = ("C0005",)

_SURNAMES = "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨"
_GIVEN = "明华强丽敏静磊洋艳勇"


def generated_customers(first: int = 6, last: int = 41) -> list[dict[str, Any]]:
    """C0006..C0041 for the A/B demo, always the same: phone and email each, two in three of
    high net worth (aum >= 500,000), the others of low net worth."""
    found = []
    for i in range(first, last + 1):
        aum = 500_000 + i * 25_000 if i % 3 else 10_000 + i * 500
        tier = "private" if aum >= 1_000_000 else "affluent" if aum >= 500_000 else "mass"
        found.append(
            {
                "id": f"C{i:04d}",
                "name": _SURNAMES[i % len(_SURNAMES)] + _GIVEN[i * 7 % len(_GIVEN)],
                "phone": f"1350000{i:04d}",
                "email": f"customer{i:04d}@example.com",
                "attributes": {"aum": aum, "tier": tier},
            }
        )
    return found


# the attributes the demo customers carry, declared so that profiles and segments check them
ATTRIBUTES = {
    "aum": AttributeIn(type=AttributeType.number, description="assets under management, CNY"),
    "tier": AttributeIn(type=AttributeType.string, description="mass, affluent or private"),
}

# The personalized marketing patch: wealth products for high net worth, a loan offer for low
# net worth, on the account-movement SMS (opted-out customers get nothing extra).
SEGMENTS = {
    "high_net_worth": {"field": "aum", "op": "gte", "value": 500000},
    "low_net_worth": {"field": "aum", "op": "lt", "value": 50000},
}
PATCHES = {
    "wealth_patch.sms": "尊享理财：稳健系列年化3.2%，详询客户经理",
    "loan_patch.sms": "您有一笔最高20万元的预授信额度，可线上申请",
}
STRATEGIES = (
    ("wealth_offer", "high_net_worth", "wealth_patch.sms", 10),
    ("loan_offer", "low_net_worth", "loan_patch.sms", 20),
)

DEMO_KEYS = (("demo-admin", Role.admin), ("demo-core-banking", Role.system))


async def _seed_strategies(session: AsyncSession) -> None:
    for key, rule in SEGMENTS.items():
        if await strategies_repository.segment(session, key) is None:
            await strategies.create_segment(session, SegmentIn(key=key, rule=rule))
    for key, body in PATCHES.items():
        if await templates_repository.by_key(session, key) is None:
            content = TemplateIn(body=body)
            await templates.create(
                session, TemplateCreate(key=key, channel=Channel.sms, content=content)
            )
            await templates.publish(session, key, 1)
    for key, segment, template, priority in STRATEGIES:
        if await strategies_repository.strategy(session, key) is None:
            data = StrategyIn(
                key=key,
                scenario="account_movement",
                segment=segment,
                patch_templates={Channel.sms: template},
                priority=priority,
                status=StrategyStatus.active,
                frequency_cap=FrequencyCapIn(max_patches=3, days=7),
            )
            await strategies.create_strategy(session, data)


async def seed(session: AsyncSession, keys_file: Path) -> dict[str, str]:
    """Seed the demo; return the keys created now (already existing keys keep their secret)."""
    if await scenarios_repository.by_key(session, ACCOUNT_MOVEMENT["key"]) is None:  # type: ignore[arg-type]
        await scenarios.create(session, ScenarioCreate.model_validate(ACCOUNT_MOVEMENT))
    for name, spec in ATTRIBUTES.items():
        await customer_service.put_attribute(session, name, spec)
    for data in [*CUSTOMERS, *generated_customers()]:
        values = {k: v for k, v in data.items() if k != "id"}
        await customers.upsert(session, str(data["id"]), **values)
    await customers.record_consents(
        session,
        [
            {
                "customer_id": cid,
                "channel": "sms",
                "purpose": "marketing",
                "granted": False,
                "source": "demo",
                "updated_at": utcnow(),
            }
            for cid in OPTED_OUT
        ],
    )
    await _seed_strategies(session)
    await demo_ab.seed(session)
    created: dict[str, str] = {}
    for name, role in DEMO_KEYS:
        if await keys_repository.by_name(session, name) is None:
            _, created[name] = await create_key(session, name=name, role=role)
    if created:
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        with keys_file.open("a", encoding="utf-8") as fh:
            os.chmod(keys_file, 0o600)
            for name, plaintext in created.items():
                fh.write(f"{name.upper().replace('-', '_')}_KEY={plaintext}\n")
    return created
