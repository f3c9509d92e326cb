"""/v1/campaigns: marketers (and admins) define and steer campaigns; analysts read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.auth.schemas import Role
from app.auth.service import Principal
from app.campaigns import repository, service
from app.campaigns.schemas import CampaignIn, CampaignList, CampaignOut, CampaignUpdate
from app.deps import MarketerPrincipal, ReadSessionDep, SessionDep, require
from app.errors import ERROR_RESPONSES, error_responses
from app.idempotency.service import IdempotencyDep, idempotent_responses
from app.pagination import Cursor, Limit, decode_cursor, paginate

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=ERROR_RESPONSES)
ReadingPrincipal = Annotated[Principal, Depends(require(Role.marketer, Role.analyst))]
_404 = error_responses(404)
_TRANSITION = error_responses(404, 409)


@router.post(
    "",
    status_code=201,
    response_model=CampaignOut,
    summary="Create a draft campaign: a marketing scenario to a segment (or a sample of it)",
    responses=idempotent_responses(),
)
async def create_campaign(
    body: CampaignIn,
    session: SessionDep,
    principal: MarketerPrincipal,
    idempotency: IdempotencyDep,
) -> CampaignOut | JSONResponse:
    async def create() -> CampaignOut:
        return service.to_out(await service.create(session, body))

    return await idempotency.run(principal.owner, body, create)


@router.get("", response_model=CampaignList, summary="List campaigns by key, with progress")
async def list_campaigns(
    session: ReadSessionDep, _: ReadingPrincipal, limit: Limit = 50, cursor: Cursor = None
) -> CampaignList:
    rows = await repository.page(session, after_key=decode_cursor(cursor), limit=limit + 1)
    rows, next_cursor = paginate(rows, limit, lambda c: c.key)
    return CampaignList(items=[service.to_out(c) for c in rows], next_cursor=next_cursor)


@router.get(
    "/{key}", response_model=CampaignOut, summary="One campaign and its progress", responses=_404
)
async def get_campaign(key: str, session: ReadSessionDep, _: ReadingPrincipal) -> CampaignOut:
    return service.to_out(await service.get(session, key))


@router.patch(
    "/{key}", response_model=CampaignOut, summary="Change a draft campaign", responses=_TRANSITION
)
async def update_campaign(
    key: str, body: CampaignUpdate, session: SessionDep, _: MarketerPrincipal
) -> CampaignOut:
    return service.to_out(await service.update(session, key, body))


@router.post(
    "/{key}/start",
    response_model=CampaignOut,
    summary="Start a draft: scheduled if starts_at is ahead, else running",
    responses=_TRANSITION,
)
async def start_campaign(key: str, session: SessionDep, _: MarketerPrincipal) -> CampaignOut:
    return service.to_out(await service.start(session, key))


@router.post(
    "/{key}/pause",
    response_model=CampaignOut,
    summary="Pause a running or scheduled campaign (after the chunk in progress)",
    responses=_TRANSITION,
)
async def pause_campaign(key: str, session: SessionDep, _: MarketerPrincipal) -> CampaignOut:
    return service.to_out(await service.pause(session, key))


@router.post(
    "/{key}/resume",
    response_model=CampaignOut,
    summary="Resume a paused campaign where it stopped",
    responses=_TRANSITION,
)
async def resume_campaign(key: str, session: SessionDep, _: MarketerPrincipal) -> CampaignOut:
    return service.to_out(await service.resume(session, key))


@router.post(
    "/{key}/cancel",
    response_model=CampaignOut,
    summary="Cancel a campaign for good, with its messages that have not gone",
    responses=_TRANSITION,
)
async def cancel_campaign(key: str, session: SessionDep, _: MarketerPrincipal) -> CampaignOut:
    return service.to_out(await service.cancel(session, key))
