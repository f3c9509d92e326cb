"""`/v1/experiments`: marketers (and admins) create and change them, analysts read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.responses import JSONResponse

from app.auth.schemas import Role
from app.auth.service import Principal
from app.deps import MarketerPrincipal, ReadSessionDep, SessionDep, require
from app.errors import ERROR_RESPONSES, NotFound, error_responses
from app.experiments import repository, service
from app.experiments.schemas import (
    AssignmentList,
    AssignmentOut,
    CompleteIn,
    ExperimentIn,
    ExperimentKind,
    ExperimentList,
    ExperimentOut,
    ExperimentStatus,
    ExperimentUpdate,
)
from app.idempotency.service import IdempotencyDep, idempotent_responses
from app.pagination import Cursor, Limit, decode_cursor, paginate

router = APIRouter(prefix="/v1/experiments", tags=["experiments"], responses=ERROR_RESPONSES)
ExperimentReader = Annotated[Principal, Depends(require(Role.analyst, Role.marketer))]
_404 = error_responses(404)
_404_409 = error_responses(404, 409)


@router.post(
    "",
    status_code=201,
    response_model=ExperimentOut,
    summary="Create an experiment (a draft)",
    responses=idempotent_responses(),
)
async def create_experiment(
    body: ExperimentIn,
    session: SessionDep,
    principal: MarketerPrincipal,
    idempotency: IdempotencyDep,
) -> ExperimentOut | JSONResponse:
    async def create() -> ExperimentOut:
        return service.to_out(await service.create(session, body))

    return await idempotency.run(principal.owner, body, create)


@router.get("", response_model=ExperimentList, summary="List experiments by key")
async def list_experiments(
    session: ReadSessionDep,
    _: ExperimentReader,
    status: ExperimentStatus | None = None,
    kind: ExperimentKind | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ExperimentList:
    rows = await repository.page(
        session,
        after_key=decode_cursor(cursor),
        limit=limit + 1,
        status=status.value if status else None,
        kind=kind.value if kind else None,
    )
    rows, cursor_out = paginate(rows, limit, lambda e: e.key)
    return ExperimentList(items=[service.to_out(r) for r in rows], next_cursor=cursor_out)


@router.get(
    "/{ref}", response_model=ExperimentOut, summary="One experiment (by key or id)", responses=_404
)
async def get_experiment(ref: str, session: ReadSessionDep, _: ExperimentReader) -> ExperimentOut:
    return service.to_out(await service.get(session, ref))


@router.patch(
    "/{ref}",
    response_model=ExperimentOut,
    summary="Change an experiment (a started one: only its name and decision settings)",
    responses=_404_409,
)
async def update_experiment(
    ref: str, body: ExperimentUpdate, session: SessionDep, _: MarketerPrincipal
) -> ExperimentOut:
    return service.to_out(await service.update(session, ref, body))


@router.delete("/{ref}", status_code=204, summary="Delete a draft experiment", responses=_404_409)
async def delete_experiment(ref: str, session: SessionDep, _: MarketerPrincipal) -> Response:
    await service.delete(session, ref)
    return Response(status_code=204)


@router.post(
    "/{ref}/start",
    response_model=ExperimentOut,
    summary="Start: draft -> running (customers are assigned from now on)",
    responses=_404_409,
)
async def start_experiment(ref: str, session: SessionDep, _: MarketerPrincipal) -> ExperimentOut:
    return service.to_out(await service.start(session, ref))


@router.post(
    "/{ref}/stop",
    response_model=ExperimentOut,
    summary="Stop: running -> stopped (no new assignments; the strategy's patch again)",
    responses=_404_409,
)
async def stop_experiment(ref: str, session: SessionDep, _: MarketerPrincipal) -> ExperimentOut:
    return service.to_out(await service.stop(session, ref))


@router.post(
    "/{ref}/complete",
    response_model=ExperimentOut,
    summary="Complete: running or stopped -> completed, optionally naming the winner",
    responses=_404_409,
)
async def complete_experiment(
    ref: str,
    session: SessionDep,
    _: MarketerPrincipal,
    body: Annotated[CompleteIn | None, Body()] = None,
) -> ExperimentOut:
    return service.to_out(await service.complete(session, ref, body or CompleteIn()))


@router.get(
    "/{ref}/assignments",
    response_model=AssignmentList,
    summary="The customers assigned so far, by customer id",
    responses=_404,
)
async def list_assignments(
    ref: str,
    session: ReadSessionDep,
    _: ExperimentReader,
    variant: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AssignmentList:
    experiment = await service.get(session, ref)
    rows = await repository.assignments_page(
        session,
        experiment.id,
        after_customer=decode_cursor(cursor),
        limit=limit + 1,
        variant=variant,
    )
    rows, cursor_out = paginate(rows, limit, lambda a: a.customer_id)
    items = [AssignmentOut.model_validate(r, from_attributes=True) for r in rows]
    return AssignmentList(items=items, next_cursor=cursor_out)


@router.get(
    "/{ref}/assignments/{customer_id}",
    response_model=AssignmentOut,
    summary="The variant one customer was assigned",
    responses=_404,
)
async def get_assignment(
    ref: str, customer_id: str, session: ReadSessionDep, _: ExperimentReader
) -> AssignmentOut:
    experiment = await service.get(session, ref)
    found = await repository.assignment(session, experiment.id, customer_id)
    if found is None:
        raise NotFound(f"customer {customer_id!r} is not assigned in experiment {experiment.key!r}")
    return AssignmentOut.model_validate(found, from_attributes=True)
