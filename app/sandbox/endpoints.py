from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import AnalystPrincipal, ReadSessionDep
from app.errors import ERROR_RESPONSES
from app.masking import mask_contact
from app.pagination import Cursor, Limit, decode_cursor, paginate
from app.sandbox import repository
from app.timeutil import ApiTime
from channels.base import CONTACT_FIELD

router = APIRouter(prefix="/v1/sandbox", tags=["sandbox"], responses=ERROR_RESPONSES)


class SandboxDeliveryOut(BaseModel):
    id: str
    provider: str
    channel: str
    message_id: str | None
    to: str
    content: dict[str, Any]
    created_at: datetime


class SandboxDeliveryList(BaseModel):
    items: list[SandboxDeliveryOut]
    next_cursor: str | None


@router.get(
    "/deliveries",
    response_model=SandboxDeliveryList,
    summary="What the sandbox providers recorded",
)
async def list_deliveries(
    session: ReadSessionDep,
    _: AnalystPrincipal,
    channel: str | None = None,
    message_id: str | None = None,
    since: ApiTime | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> SandboxDeliveryList:
    """What the sandbox providers would have sent (recipients masked)."""
    rows = await repository.list_deliveries(
        session,
        channel=channel,
        message_id=message_id,
        before_id=decode_cursor(cursor),
        since=since,
        limit=limit + 1,
    )
    items = [
        SandboxDeliveryOut(
            id=r.id,
            provider=r.provider,
            channel=r.channel,
            message_id=r.message_id,
            to=mask_contact(CONTACT_FIELD.get(r.channel, ""), r.to),
            content=r.content,
            created_at=r.created_at,
        )
        for r in rows
    ]
    page, cursor_out = paginate(items, limit, lambda r: r.id)
    return SandboxDeliveryList(items=page, next_cursor=cursor_out)
