from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.callbacks import service
from app.db import after_commit
from app.deps import RuntimeDep, SessionDep
from app.errors import AppError, NotFound, Unauthorized, error_responses
from channels.base import CallbackRequest
from channels.errors import CallbackAuthError, CallbackNotSupported, CallbackRejected

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])


class BadCallback(AppError):
    status_code = 400
    name = "BadCallback"


_ERRORS = error_responses(400, 401, 404)


@router.post(
    "/{provider_name}",
    summary="Delivery receipts and replies pushed by a provider",
    responses=_ERRORS,
)
async def provider_callback(
    provider_name: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Each provider's own report format and authentication (signature or token), no API
    key. Receipts are idempotent; a receipt for an unknown message is acknowledged, and one
    that came before its send was recorded is kept and applied once the message is sent."""
    return await _handle(provider_name, request, session, runtime)


@router.get(
    "/{provider_name}",
    summary="URL verification by a provider (WeChat echostr)",
    responses=_ERRORS,
)
async def provider_verification(
    provider_name: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    return await _handle(provider_name, request, session, runtime)


async def _handle(
    provider_name: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    slot = runtime.providers.slot(provider_name)
    if slot is None:
        raise NotFound(f"no provider account {provider_name!r}")
    callback = CallbackRequest(
        method=request.method,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=await request.body(),
    )
    try:
        result = await slot.provider.handle_callback(callback)
    except CallbackAuthError as exc:
        raise Unauthorized(f"callback authentication failed: {exc}") from None
    except CallbackRejected as exc:
        raise BadCallback(f"malformed callback: {exc}") from None
    except CallbackNotSupported as exc:
        raise NotFound(str(exc)) from None
    applied = await service.apply(
        session, provider=slot.name, channel=slot.account.channel, result=result
    )
    if applied.requeue:

        async def enqueue() -> None:
            await runtime.queue.enqueue(applied.requeue)

        after_commit(session, enqueue)
    return Response(content=result.response_body, media_type=result.media_type)
