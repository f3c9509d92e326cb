from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import MarketerPrincipal, ReadSessionDep, SessionDep
from app.errors import ERROR_RESPONSES, error_responses
from app.idempotency.service import IdempotencyDep, idempotent_responses
from app.pagination import Cursor, Limit, decode_cursor, paginate
from app.scenarios import repository, service
from app.scenarios.schemas import ScenarioCreate, ScenarioList, ScenarioOut, ScenarioUpdate

router = APIRouter(prefix="/v1/scenarios", tags=["scenarios"], responses=ERROR_RESPONSES)
_404 = error_responses(404)


@router.post(
    "",
    status_code=201,
    response_model=ScenarioOut,
    summary="Create a scenario with its channel order and templates",
    responses=idempotent_responses(),
)
async def create_scenario(
    body: ScenarioCreate,
    session: SessionDep,
    principal: MarketerPrincipal,
    idempotency: IdempotencyDep,
) -> ScenarioOut | JSONResponse:
    async def create() -> ScenarioOut:
        return await service.to_out(session, await service.create(session, body))

    return await idempotency.run(principal.owner, body, create)


@router.get("", response_model=ScenarioList, summary="List scenarios by key")
async def list_scenarios(
    session: ReadSessionDep, _: MarketerPrincipal, limit: Limit = 50, cursor: Cursor = None
) -> ScenarioList:
    rows = await repository.list_page(session, after_key=decode_cursor(cursor), limit=limit + 1)
    rows, cursor_out = paginate(rows, limit, lambda s: s.key)
    items = [await service.to_out(session, s) for s in rows]
    return ScenarioList(items=items, next_cursor=cursor_out)


@router.get("/{key}", response_model=ScenarioOut, summary="One scenario", responses=_404)
async def get_scenario(key: str, session: ReadSessionDep, _: MarketerPrincipal) -> ScenarioOut:
    return await service.to_out(session, await service.get(session, key))


@router.put("/{key}", response_model=ScenarioOut, summary="Replace a scenario", responses=_404)
async def replace_scenario(
    key: str, body: ScenarioUpdate, session: SessionDep, _: MarketerPrincipal
) -> ScenarioOut:
    scenario = await service.replace(session, key, body)
    return await service.to_out(session, scenario)
