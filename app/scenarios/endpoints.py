from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import MarketerPrincipal, SessionDep
from app.errors import ERROR_RESPONSES, ErrorBody
from app.pagination import Cursor, Limit, decode_cursor, next_cursor
from app.scenarios import repository, service
from app.scenarios.schemas import ScenarioCreate, ScenarioList, ScenarioOut, ScenarioUpdate

router = APIRouter(prefix="/v1/scenarios", tags=["scenarios"], responses=ERROR_RESPONSES)
_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown scenario"}
}


@router.post(
    "",
    status_code=201,
    response_model=ScenarioOut,
    responses={409: {"model": ErrorBody, "description": "key taken"}},
)
async def create_scenario(
    body: ScenarioCreate, session: SessionDep, _: MarketerPrincipal
) -> ScenarioOut:
    scenario = await service.create(session, body)
    return await service.to_out(session, scenario)


@router.get("", response_model=ScenarioList)
async def list_scenarios(
    session: SessionDep, _: MarketerPrincipal, limit: Limit = 50, cursor: Cursor = None
) -> ScenarioList:
    rows = await repository.list_page(session, after_key=decode_cursor(cursor), limit=limit)
    items = [await service.to_out(session, s) for s in rows]
    return ScenarioList(items=items, next_cursor=next_cursor([s.key for s in rows], limit))


@router.get("/{key}", response_model=ScenarioOut, responses=_404)
async def get_scenario(key: str, session: SessionDep, _: MarketerPrincipal) -> ScenarioOut:
    return await service.to_out(session, await service.get(session, key))


@router.put("/{key}", response_model=ScenarioOut, responses=_404)
async def replace_scenario(
    key: str, body: ScenarioUpdate, session: SessionDep, _: MarketerPrincipal
) -> ScenarioOut:
    scenario = await service.replace(session, key, body)
    return await service.to_out(session, scenario)
