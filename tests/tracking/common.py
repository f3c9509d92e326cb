"""A marketing scenario with links on every channel, and ways to read what tracking stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.messages.models import Message, MessageEvent
from app.tracking.models import TrackedLink
from tests.conftest import Platform

BASE = "http://127.0.0.1:8000"
WEALTH = "https://bank.cn/wealth?id={{ product }}&src=sms"
EMAIL_HTML = (
    '<html><body><p>稳健理财</p><a href="https://bank.cn/wealth?id={{ product }}&amp;src=mail">'
    '查看</a> <a href="mailto:vip@bank.cn">联系</a></body></html>'
)
MARKETING: dict[str, Any] = {
    "key": "wealth_promo",
    "class": "marketing",
    "channels": ["wechat", "sms", "email"],
    "required_variables": [{"name": "product", "type": "string"}],
    "templates": {
        "wechat": {
            "body": "新品理财，详情见" + WEALTH + "，拒收请回复R",
            "wechat": {
                "template_id": "TPL_WEALTH",
                "fields": {"keyword1": "稳健理财"},
                "url": "https://bank.cn/wx/wealth?id={{ product }}",
            },
        },
        "sms": {"body": "【示例银行】新品理财，详情见" + WEALTH + "。拒收请回复R"},
        "email": {
            "subject": "理财推荐",
            "body": "新品理财 https://bank.cn/wealth?id={{ product }}&src=mail",
            "html": EMAIL_HTML,
        },
    },
}
EVERYWHERE = {
    "phone": "13800001234",
    "email": "zhang.san@example.com",
    "wechat_openid": "oABC123456",
}


def promo(customer: str = "C1", **extra: Any) -> dict[str, Any]:
    return {
        "scenario": "wealth_promo",
        "customer_id": customer,
        "variables": {"product": "W42"},
        "recipient": EVERYWHERE,
        **extra,
    }


async def send(platform: Platform, body: dict[str, Any]) -> str:
    async with platform.client("system") as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


async def links_of(platform: Platform, message_id: str) -> list[TrackedLink]:
    async with platform.runtime.sessionmaker() as session:
        rows = await session.scalars(
            select(TrackedLink)
            .where(TrackedLink.message_id == message_id)
            .order_by(TrackedLink.kind, TrackedLink.url)
        )
        return list(rows.all())


async def message_row(platform: Platform, message_id: str) -> Message:
    async with platform.runtime.sessionmaker() as session:
        found = await session.get(Message, message_id)
        assert found is not None
        return found


async def events(platform: Platform, message_id: str, kind: str) -> list[MessageEvent]:
    async with platform.runtime.sessionmaker() as session:
        rows = await session.scalars(
            select(MessageEvent).where(
                MessageEvent.message_id == message_id, MessageEvent.type == kind
            )
        )
        return list(rows.all())


def token_of(link: TrackedLink) -> str:
    return link.token
