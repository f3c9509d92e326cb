from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from app.deps import MarketerPrincipal, ReadSessionDep, RuntimeDep, SessionDep
from app.errors import ERROR_RESPONSES, error_responses
from app.idempotency.service import IdempotencyDep, idempotent_responses
from app.masking import mask_email, mask_name, mask_phone
from app.pagination import Cursor, Limit, decode_cursor, paginate
from app.strategies import explain, repository, service
from app.strategies.schemas import (
    DryRunIn,
    DryRunOut,
    ExplainIn,
    ExplainOut,
    SampleCustomer,
    SegmentCount,
    SegmentIn,
    SegmentList,
    SegmentOut,
    SegmentSample,
    SegmentUpdate,
    StrategyBase,
    StrategyIn,
    StrategyList,
    StrategyOut,
)

segments = APIRouter(prefix="/v1/segments", tags=["segments"], responses=ERROR_RESPONSES)
strategies = APIRouter(prefix="/v1/strategies", tags=["strategies"], responses=ERROR_RESPONSES)
_404 = error_responses(404)


@segments.post(
    "",
    status_code=201,
    response_model=SegmentOut,
    summary="Create a segment (a rule over customer attributes)",
    responses=idempotent_responses(),
)
async def create_segment(
    body: SegmentIn,
    session: SessionDep,
    principal: MarketerPrincipal,
    idempotency: IdempotencyDep,
) -> SegmentOut | JSONResponse:
    async def create() -> SegmentOut:
        row = await service.create_segment(session, body)
        return await service.segment_out_checked(session, row)

    return await idempotency.run(principal.owner, body, create)


@segments.get("", response_model=SegmentList, summary="List segments by key")
async def list_segments(
    session: ReadSessionDep, _: MarketerPrincipal, limit: Limit = 50, cursor: Cursor = None
) -> SegmentList:
    rows = await repository.segments_page(session, after_key=decode_cursor(cursor), limit=limit + 1)
    rows, cursor_out = paginate(rows, limit, lambda s: s.key)
    items = [await service.segment_out_checked(session, r) for r in rows]
    return SegmentList(items=items, next_cursor=cursor_out)


@segments.get("/{key}", response_model=SegmentOut, summary="One segment", responses=_404)
async def get_segment(key: str, session: ReadSessionDep, _: MarketerPrincipal) -> SegmentOut:
    return await service.segment_out_checked(session, await service.get_segment(session, key))


@segments.put(
    "/{key}", response_model=SegmentOut, summary="Replace a segment's rule", responses=_404
)
async def replace_segment(
    key: str, body: SegmentUpdate, session: SessionDep, _: MarketerPrincipal
) -> SegmentOut:
    row = await service.replace_segment(session, key, body)
    return await service.segment_out_checked(session, row)


@segments.delete(
    "/{key}",
    status_code=204,
    summary="Delete a segment no strategy uses",
    responses=error_responses(404, 409),
)
async def delete_segment(key: str, session: SessionDep, _: MarketerPrincipal) -> Response:
    await service.delete_segment(session, key)
    return Response(status_code=204)


@segments.get(
    "/{key}/count", response_model=SegmentCount, summary="How many customers match", responses=_404
)
async def count_segment(key: str, session: ReadSessionDep, _: MarketerPrincipal) -> SegmentCount:
    rule = await service.segment_rule(session, key)
    return SegmentCount(key=key, count=await repository.count_matching(session, rule))


@segments.get(
    "/{key}/sample",
    response_model=SegmentSample,
    summary="A random sample of matching customers (masked)",
    responses=_404,
)
async def sample_segment(
    key: str,
    session: ReadSessionDep,
    _: MarketerPrincipal,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SegmentSample:
    rule = await service.segment_rule(session, key)
    rows = await repository.sample_matching(session, rule, size)
    items = [
        SampleCustomer(
            id=c.id,
            name=mask_name(c.name) if c.name else None,
            phone=mask_phone(c.phone) if c.phone else None,
            email=mask_email(c.email) if c.email else None,
            locale=c.locale,
            timezone=c.timezone,
        )
        for c in rows
    ]
    return SegmentSample(key=key, items=items)


@strategies.post(
    "",
    status_code=201,
    response_model=StrategyOut,
    summary="Create a strategy: scenario + segment -> patch",
    responses=idempotent_responses(),
)
async def create_strategy(
    body: StrategyIn,
    session: SessionDep,
    principal: MarketerPrincipal,
    idempotency: IdempotencyDep,
) -> StrategyOut | JSONResponse:
    async def create() -> StrategyOut:
        return service.strategy_out(await service.create_strategy(session, body))

    return await idempotency.run(principal.owner, body, create)


@strategies.get("", response_model=StrategyList, summary="List strategies by key")
async def list_strategies(
    session: ReadSessionDep,
    _: MarketerPrincipal,
    scenario: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> StrategyList:
    rows = await repository.strategies_page(
        session, after_key=decode_cursor(cursor), limit=limit + 1, scenario=scenario
    )
    rows, cursor_out = paginate(rows, limit, lambda s: s.key)
    return StrategyList(items=[service.strategy_out(r) for r in rows], next_cursor=cursor_out)


@strategies.get("/{key}", response_model=StrategyOut, summary="One strategy", responses=_404)
async def get_strategy(key: str, session: ReadSessionDep, _: MarketerPrincipal) -> StrategyOut:
    return service.strategy_out(await service.get_strategy(session, key))


@strategies.put("/{key}", response_model=StrategyOut, summary="Replace a strategy", responses=_404)
async def replace_strategy(
    key: str, body: StrategyBase, session: SessionDep, _: MarketerPrincipal
) -> StrategyOut:
    return service.strategy_out(await service.replace_strategy(session, key, body))


@strategies.delete(
    "/{key}",
    status_code=204,
    summary="Delete a strategy",
    responses=error_responses(404, 409),
)
async def delete_strategy(key: str, session: SessionDep, _: MarketerPrincipal) -> Response:
    await service.delete_strategy(session, key)
    return Response(status_code=204)


@strategies.post(
    "/explain",
    response_model=ExplainOut,
    summary="Every strategy's verdict for a customer and scenario, channel by channel",
    responses=_404,
)
async def explain_strategies(
    body: ExplainIn, session: ReadSessionDep, runtime: RuntimeDep, _: MarketerPrincipal
) -> ExplainOut:
    return await explain.explain(session, body, settings=runtime.settings)


@strategies.post(
    "/dry-run",
    response_model=DryRunOut,
    summary="The distribution of decisions over a sample of customers",
    responses=_404,
)
async def dry_run_strategies(
    body: DryRunIn, session: ReadSessionDep, runtime: RuntimeDep, _: MarketerPrincipal
) -> DryRunOut:
    return await explain.dry_run(session, body, settings=runtime.settings)
