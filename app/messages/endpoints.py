from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.auth.schemas import Role
from app.deps import (
    BEARER_SECURITY,
    ReaderPrincipal,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
    SystemPrincipal,
    authorize,
    roles,
)
from app.errors import (
    CHECKED_BEFORE_THE_BODY,
    ERROR_RESPONSES,
    ErrorBody,
    PayloadTooLarge,
    ValidationFailed,
    error_responses,
)
from app.messages import reading, service
from app.messages.compose import Prepared
from app.messages.schemas import (
    BatchCreate,
    BatchResult,
    MessageAccepted,
    MessageCreate,
    MessageDetail,
    MessageList,
    MessageStatus,
)
from app.pagination import Cursor, Limit, decode_cursor, paginate
from app.timeutil import ApiTime

MAX_KEY_LENGTH = 200

router = APIRouter(prefix="/v1/messages", tags=["messages"], responses=ERROR_RESPONSES)


def accepted_json(accepted: service.Accepted) -> str:
    """The 202 answer's body (also app/messages/fast_send.py's)."""
    return _accepted(accepted).model_dump_json()


def _accepted(accepted: service.Accepted) -> MessageAccepted:
    msg = accepted.message
    if isinstance(msg, Prepared):
        row = msg.message
        return MessageAccepted(
            id=msg.id,
            status=row["status"],
            scenario=row["scenario"],
            customer_id=row["customer_id"],
            channels=row["channels"],
            send_at=row["send_at"],
            created_at=row["created_at"],
        )
    return MessageAccepted(
        id=msg.id,
        status=MessageStatus(msg.status),
        scenario=msg.scenario,
        customer_id=msg.customer_id,
        channels=msg.channels,
        send_at=msg.send_at,
        created_at=msg.created_at,
    )


SEND_ROLES = roles(Role.system)


# Both routes read the Idempotency-Key header by hand (`header_key`): its length counts
# characters once decoded from UTF-8, where FastAPI would count the bytes of a UTF-8 key
# (Starlette decodes headers as Latin-1). The hot route reads its API key by hand too.
# This tells OpenAPI.
def key_parameter(description: str) -> dict[str, Any]:
    """OpenAPI's entry of an Idempotency-Key header read by hand (``checked_key``)."""
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    }


_SEND_OPENAPI: dict[str, Any] = {
    "security": BEARER_SECURITY,
    "parameters": [
        key_parameter("the request's idempotency key (or `idempotency_key` in the body)")
    ],
}
_BATCH_OPENAPI: dict[str, Any] = {
    "parameters": [key_parameter("items without a key of their own get `<key>:<index>`")]
}


@router.post(
    "",
    status_code=202,
    response_model=MessageAccepted,
    summary="Send one message",
    responses={
        404: {"model": ErrorBody, "description": "unknown scenario"},
        409: {
            "model": ErrorBody,
            "description": "idempotency key reused with another body, or the customer is being "
            "erased",
        },
        413: {"model": ErrorBody, "description": "body too large"},
    },
    openapi_extra=_SEND_OPENAPI,
)
async def send_message(body: MessageCreate, request: Request) -> Response:
    """Accept a message: validate, render, persist with its outbox entry, queue after commit.
    A replay (same idempotency key, same body) returns the first message with
    `Idempotency-Replay: true`."""
    # Authorized by a plain call rather than dependencies: on this route, FastAPI's
    # dependency solving cost more than the rest of accepting a message.
    principal = await authorize(request, SEND_ROLES)
    key = service.resolve_idempotency_key(body.idempotency_key, header_key(request))
    runtime = request.app.state.runtime
    accepted = await runtime.accept(
        service.AcceptRequest(body.scenario, principal.owner, body, key)
    )
    # A Response of our own: the hot path skips FastAPI's copying of a temporary response.
    return Response(
        content=accepted_json(accepted),
        status_code=202,
        media_type="application/json",
        headers={"Idempotency-Replay": "true"} if accepted.replayed else None,
    )


async def _authorize_sender(request: Request) -> object:
    return await authorize(request, SEND_ROLES)


CHECKED_BEFORE_THE_BODY[send_message] = _authorize_sender


def header_key(request: Request) -> str | None:
    """The request's Idempotency-Key header, checked (also the conversion routes')."""
    return checked_key(request.headers.get("idempotency-key"))


def checked_key(header: str | None) -> str | None:
    """The Idempotency-Key header's value (Latin-1 decoded, as Starlette gives it) as its
    sender wrote it, checked; ValidationFailed otherwise (also app/messages/fast_send.py)."""
    key = _utf8(header)
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ValidationFailed.field(
            "Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} characters long"
        )
    return key


def _utf8(header: str | None) -> str | None:
    """A header's value as its sender wrote it: Starlette decodes header bytes as Latin-1,
    and a key such as 订单-0001 sent in UTF-8 would be another key than the same in a body."""
    if header is None or header.isascii():
        return header
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed.field("Idempotency-Key", "must be ASCII or UTF-8") from None


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchResult,
    summary="Send up to 10,000 messages of one scenario",
    responses=error_responses(404, 413),
    openapi_extra=_BATCH_OPENAPI,
)
async def send_batch(
    body: BatchCreate,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: SystemPrincipal,
) -> Response:
    """Each item is validated on its own and gets its own result (an id or an error).
    With an `Idempotency-Key` header, items without a key of their own get
    `<header>:<index>`, so a retried batch replays its messages instead of sending twice."""
    limit = runtime.settings.api.max_batch_items
    if len(body.items) > limit:
        raise PayloadTooLarge(f"a batch holds at most {limit} items; split it")
    answer = await service.accept_batch(
        session,
        body.scenario,
        body.items,
        principal=principal,
        queue=runtime.queue,
        batch_key=header_key(request),
        settings=runtime.settings,
    )
    # serialized here: FastAPI's response_model path would first build 10,000 BatchItemResult
    return Response(content=answer.to_json(), status_code=202, media_type="application/json")


@router.get(
    "/{message_id}",
    response_model=MessageDetail,
    summary="A message and its timeline",
    responses=error_responses(404),
)
async def get_message(
    message_id: str, session: ReadSessionDep, principal: ReaderPrincipal
) -> MessageDetail:
    """Status, channel, provider, rendered content, attempts, the decision record and the
    timeline of events. System keys see only their own business system's messages."""
    return await reading.get_message(session, message_id, principal=principal)


@router.get("", response_model=MessageList, summary="List messages, newest first")
async def list_messages(
    session: ReadSessionDep,
    principal: ReaderPrincipal,
    customer_id: str | None = None,
    scenario: str | None = None,
    status: MessageStatus | None = None,
    since: Annotated[ApiTime | None, Query(description="created at or after")] = None,
    experiment_id: Annotated[
        str | None, Query(max_length=40, description="the messages of this experiment")
    ] = None,
    campaign_id: Annotated[
        str | None, Query(max_length=40, description="the messages this campaign sent")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> MessageList:
    """Filter by customer, scenario, status, creation time, experiment and campaign; page
    with `cursor`."""
    items = await reading.list_messages(
        session,
        principal=principal,
        customer_id=customer_id,
        scenario=scenario,
        status=status,
        since=since,
        experiment_id=experiment_id,
        campaign_id=campaign_id,
        before_id=decode_cursor(cursor),
        limit=limit + 1,
    )
    page, cursor_out = paginate(items, limit, lambda m: m.id)
    return MessageList(items=page, next_cursor=cursor_out)
