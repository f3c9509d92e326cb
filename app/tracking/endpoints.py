"""Public tracking routes (no API key: customers' phones and mail clients call them) and the
conversions API."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Response
from fastapi.responses import RedirectResponse

from app.auth.schemas import Role
from app.auth.service import Principal
from app.deps import AnalystPrincipal, ReadSessionDep, RuntimeDep, SessionDep, require
from app.errors import ERROR_RESPONSES, AppError, ErrorBody, PayloadTooLarge, error_responses
from app.messages.endpoints import header_key, key_parameter
from app.pagination import Cursor, Limit, decode_cursor, paginate
from app.tracking import conversions as conversion_service
from app.tracking import links, service
from app.tracking.schemas import (
    ConversionBatchIn,
    ConversionBatchOut,
    ConversionIn,
    ConversionList,
    ConversionOut,
)

public = APIRouter(tags=["tracking"], responses=error_responses(404))

# The smallest transparent GIF: 1x1, one transparent colour
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Every request must reach us to be counted; a cached redirect or pixel never would
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@public.get(
    "/t/{token}",
    status_code=302,
    summary="Follow a tracked link",
    responses={302: {"description": "redirect to the original URL"}},
)
async def follow_link(token: str, session: SessionDep) -> Response:
    """Redirect to the link's original URL. The first click of a message sets its
    `clicked_at` and adds a "clicked" event; later clicks only redirect."""
    touched = await service.touch(session, token, links.LINK)
    return RedirectResponse(touched.url or "/", status_code=302, headers=NO_STORE)


@public.head("/t/{token}", status_code=302, summary="Check a tracked link (not counted)")
async def peek_link(token: str, session: ReadSessionDep) -> Response:
    """What link-preview bots ask: the redirect without counting a click."""
    _, url = await service.resolve(session, token, links.LINK)
    return RedirectResponse(url or "/", status_code=302, headers=NO_STORE)


@public.get(
    "/o/{token}",
    summary="Open pixel of an email",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}, "description": "a 1x1 transparent GIF"}},
)
async def open_pixel(token: str, session: SessionDep) -> Response:
    """A 1x1 transparent GIF. The first load sets the message's `opened_at` and adds an
    "opened" event."""
    await service.touch(session, token, links.OPEN)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@public.head("/o/{token}", summary="Check an open pixel (not counted)", response_class=Response)
async def peek_pixel(token: str, session: ReadSessionDep) -> Response:
    """The pixel's headers without counting an open."""
    await service.resolve(session, token, links.OPEN)
    headers = {**NO_STORE, "Content-Length": str(len(PIXEL))}
    return Response(media_type="image/gif", headers=headers)


conversions = APIRouter(prefix="/v1/conversions", tags=["conversions"], responses=ERROR_RESPONSES)
ReporterPrincipal = Annotated[Principal, Depends(require(Role.system))]


# Read as the message routes read theirs: decoded from UTF-8 and counted in characters (as
# a FastAPI Header it was Latin-1 and counted bytes)
IdempotencyHeader = Annotated[str | None, Depends(header_key)]


@conversions.post(
    "",
    status_code=201,
    response_model=ConversionOut,
    summary="Report a conversion",
    responses={
        404: {"model": ErrorBody, "description": "unknown message"},
        409: {"model": ErrorBody, "description": "idempotency key reused with another body"},
    },
    openapi_extra={
        "parameters": [key_parameter("a replay with the same body returns the first conversion")]
    },
)
async def create_conversion(
    body: ConversionIn,
    session: SessionDep,
    principal: ReporterPrincipal,
    idempotency_key: IdempotencyHeader,
) -> Response:
    """Record a business outcome and attribute it: to `message_id`'s message (and its
    experiment variant, when it happened within the experiment's attribution window after
    the message), or else to the customer's last experiment exposure within the
    attribution window. A replay (same `Idempotency-Key`, same body) returns the first
    conversion with `Idempotency-Replay: true`."""
    request = conversion_service.ConversionRequest(principal.owner, body, idempotency_key)
    [outcome] = await conversion_service.record_many(session, [request])
    if isinstance(outcome, AppError):
        raise outcome
    return Response(
        outcome.conversion.model_dump_json(),
        status_code=201,
        media_type="application/json",
        headers={"Idempotency-Replay": "true"} if outcome.replayed else None,
    )


@conversions.post(
    "/batch",
    status_code=200,
    response_model=ConversionBatchOut,
    summary="Report up to 10,000 conversions",
    responses=error_responses(409, 413),
    openapi_extra={"parameters": [key_parameter("item *i* uses `<key>:<i>`")]},
)
async def create_conversions(
    body: ConversionBatchIn,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: ReporterPrincipal,
    idempotency_key: IdempotencyHeader,
) -> Response:
    """Each item is validated and attributed on its own and gets its own result. With an
    `Idempotency-Key` header, item *i* uses `<key>:<i>`, so a retried batch replays."""
    limit = runtime.settings.api.max_batch_items
    if len(body.items) > limit:
        raise PayloadTooLarge(f"a batch holds at most {limit} items; split it")
    requests, positions, errors = conversion_service.parse_items(
        body.items, owner=principal.owner, batch_key=idempotency_key
    )
    outcomes = await conversion_service.record_many(session, requests)
    items: list[dict[str, Any]] = [{} for _ in body.items]
    for index, error in errors.items():
        items[index] = _item_error(index, error)
    for index, outcome in zip(positions, outcomes, strict=True):
        if isinstance(outcome, AppError):
            errors[index] = outcome
            items[index] = _item_error(index, outcome)
        else:
            conversion = outcome.conversion.model_dump(mode="json")
            items[index] = {"index": index, "conversion": conversion, "replayed": outcome.replayed}
    answer = {"accepted": len(items) - len(errors), "rejected": len(errors), "items": items}
    return Response(orjson.dumps(answer), media_type="application/json")


def _item_error(index: int, exc: AppError) -> dict[str, Any]:
    return {"index": index, "conversion": None, "replayed": False, **exc.body()}


@conversions.get(
    "",
    response_model=ConversionList,
    summary="List conversions, newest first",
    responses=error_responses(404),
)
async def list_conversions(
    session: ReadSessionDep,
    _principal: AnalystPrincipal,
    customer_id: str | None = None,
    experiment: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ConversionList:
    """Filter by customer and by experiment (key or id: 404 if there is none); page with
    `cursor`."""
    rows = await conversion_service.list_page(
        session,
        customer_id=customer_id,
        experiment=experiment,
        before_id=decode_cursor(cursor),
        limit=limit + 1,
    )
    page, next_cursor = paginate(rows, limit, lambda c: c.id)
    return ConversionList(items=page, next_cursor=next_cursor)
