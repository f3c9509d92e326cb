"""The ``Idempotency-Key`` of creating POSTs, one mechanism for every such route.

An endpoint takes ``idempotency: IdempotencyDep`` and wraps its work in
``await idempotency.run(owner, body, create)``:

- no header: ``create()`` runs as before;
- first use of the key (per caller owner and route): a record is inserted FIRST in the
  request's transaction, then ``create()`` runs and its response is stored in the same
  transaction. A failure rolls both back, so the client may fix the request and retry
  with the same key;
- the key again with the same body (and path): the stored status and body, with
  ``Idempotency-Replay: true``; nothing is created;
- the key again with another body: 409 ``IdempotencyKeyReused``.

Concurrent duplicates meet at the unique constraint of ``idempotent_requests``: one
creates, the others wait for its commit and replay (or get 409 ``IdempotencyInProgress``
should they ever see the record unfinished).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import SessionDep
from app.errors import (
    Conflict,
    ErrorBody,
    IdempotencyConflict,
    ValidationFailed,
    error_responses,
)
from app.idempotency import repository

MAX_KEY_LENGTH = 255
_PRINTABLE = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
REPLAY_HEADER = "Idempotency-Replay"

Out = TypeVar("Out", bound=BaseModel)


class IdempotencyInProgress(Conflict):
    name = "IdempotencyInProgress"


class AlreadyCreated(Conflict):
    """A replay of a request whose response held a secret that is shown only once."""

    name = "AlreadyCreated"


# Validated by hand (a clear message); the schema is for OpenAPI.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description=(
            "optional: the same key (per calling owner and route) with the same body creates "
            "once and then returns the first response with `Idempotency-Replay: true`; with "
            "another body: 409 `IdempotencyKeyReused`"
        ),
        json_schema_extra={
            "minLength": 1,
            "maxLength": MAX_KEY_LENGTH,
            "pattern": "^[\\x20-\\x7e]+$",
            "examples": ["create-welcome-2026-11-23"],
        },
    ),
]


def idempotent_responses(*codes: int, success: int = 201) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of a route taking the header: its errors, 409 and the replay header."""
    responses = error_responses(*codes)
    responses[409] = {
        "model": ErrorBody,
        "description": "Conflict: it already exists, or the Idempotency-Key was used with "
        "another body (`IdempotencyKeyReused`) or is still in progress",
    }
    responses[success] = {
        "headers": {
            REPLAY_HEADER: {
                "description": "`true` when the response is replayed for an Idempotency-Key",
                "schema": {"type": "string", "enum": ["true"]},
            }
        }
    }
    return responses


def request_hash(path: str, body: BaseModel) -> str:
    """SHA-256 of the canonical JSON (sorted keys) of the path and the validated body."""
    canonical = {"path": path, "body": body.model_dump(mode="json", by_alias=True)}
    try:
        data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, which the route itself will refuse (422)
        data = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


def check_key(key: str | None) -> str | None:
    if key is not None and not _PRINTABLE.fullmatch(key):
        raise ValidationFailed.field(
            "Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


@dataclass(frozen=True)
class Idempotency:
    """The request's key (if any), bound to its session and route."""

    session: AsyncSession
    request: Request
    key: str | None

    async def run(
        self,
        owner: str,
        body: BaseModel,
        create: Callable[[], Awaitable[Out]],
        *,
        shown_once: str | None = None,
    ) -> Out | JSONResponse:
        """``create()`` once per key. ``shown_once`` names a secret field of the response:
        it is never stored, and a replay gets 409 ``AlreadyCreated`` instead."""
        if self.key is None:
            return await create()
        route, status_code = self._route()
        digest = request_hash(self.request.url.path, body)
        where = {"owner": owner, "route": route, "key": self.key}
        row_id = await repository.claim(
            self.session, **where, request_hash=digest, status_code=status_code
        )
        if row_id is None:
            return await self._replay(where, digest, shown_once)
        out = await create()
        stored = out.model_dump(mode="json", by_alias=True)
        if shown_once is not None:
            stored.pop(shown_once, None)
        await repository.complete(self.session, row_id, stored)
        return out

    def _route(self) -> tuple[str, int]:
        route = self.request.scope["route"]
        return f"POST {route.path}", route.status_code or 200

    async def _replay(
        self, where: dict[str, str], digest: str, shown_once: str | None
    ) -> JSONResponse:
        row = await repository.find(self.session, **where)
        key = where["key"]
        if row is None or row.response is None:
            raise IdempotencyInProgress(
                f"a request with Idempotency-Key {key!r} is still in progress; retry shortly"
            )
        if row.request_hash != digest:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used on {where['route']} with another "
                "body; send the same body to replay it, or a new key for a new request"
            )
        if shown_once is not None:
            raise AlreadyCreated(
                f"Idempotency-Key {key!r} already created {row.response.get('id')!r}; its "
                f"{shown_once} is shown only once and is not replayed: revoke it and create "
                "another if it was lost"
            )
        return JSONResponse(
            row.response, status_code=row.status_code, headers={REPLAY_HEADER: "true"}
        )


async def get_idempotency(
    request: Request, session: SessionDep, idempotency_key: IdempotencyKeyHeader = None
) -> Idempotency:
    # not named `key`: that is a path parameter of some routes
    return Idempotency(session, request, check_key(idempotency_key))


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
