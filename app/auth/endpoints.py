from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.auth import repository, service
from app.auth.models import ApiKey
from app.auth.schemas import KeyCreate, KeyCreated, KeyList, KeyOut, Role
from app.db import after_commit
from app.deps import AdminPrincipal, ReadSessionDep, RuntimeDep, SessionDep
from app.errors import ERROR_RESPONSES, error_responses
from app.idempotency.service import IdempotencyDep, idempotent_responses

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)


def _out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        owner=key.owner,
        role=Role(key.role),
        prefix=key.prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    summary="Create an API key",
    responses=idempotent_responses(),
)
async def create_key(
    body: KeyCreate, session: SessionDep, principal: AdminPrincipal, idempotency: IdempotencyDep
) -> KeyCreated | JSONResponse:
    """Create a key. The secret is in this response only; it is stored hashed.

    With an `Idempotency-Key`, the secret is not stored with the response either: a repeat
    of the request gets 409 `AlreadyCreated` naming the key's id, never the secret again
    (another body: 409 `IdempotencyKeyReused`)."""

    async def create() -> KeyCreated:
        key, plaintext = await service.create_key(
            session, name=body.name, role=body.role, owner=body.owner
        )
        return KeyCreated(**_out(key).model_dump(), key=plaintext)

    return await idempotency.run(principal.owner, body, create, shown_once="key")


@router.get("", response_model=KeyList, summary="List API keys (without secrets)")
async def list_keys(session: ReadSessionDep, _: AdminPrincipal) -> KeyList:
    return KeyList(items=[_out(k) for k in await repository.list_keys(session)])


@router.delete(
    "/{key_id}", status_code=204, summary="Revoke an API key", responses=error_responses(404)
)
async def revoke_key(
    key_id: str, session: SessionDep, runtime: RuntimeDep, _: AdminPrincipal
) -> Response:
    await service.revoke_key(session, key_id)

    async def forget_cached_keys() -> None:  # after commit: a lookup before it would re-cache
        runtime.keys.clear()

    after_commit(session, forget_cached_keys)
    return Response(status_code=204)
