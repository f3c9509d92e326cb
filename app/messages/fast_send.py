"""``POST /v1/messages`` served beneath FastAPI's layers when the request is an ordinary one.

Business systems call this route for every notification, and profiles of ``icc serve``
under load put a third of its CPU in FastAPI and Starlette around the route (its middleware
stack, routing through every route of the API, the request and response objects), more than
accepting the message itself. For a request that is unremarkable (a JSON body within the
size limit, no query string, a key allowed to send), this module does what the route does:
the same parsing (``json.loads``, as Starlette's ``Request.json``) and validation
(``MessageCreate``), the same call to the runtime, the same answer and the same error
bodies for what accepting refuses.

Anything else goes to the FastAPI route, with the body it has read replayed: a missing or
bad key, a body that does not parse or validate, another content type, a body over the
limit. The answers, error shapes and logs of those cases stay the route's own; the route
remains the one documented in OpenAPI. Nothing has been accepted when a request is handed
over, so it is never accepted twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from app.errors import AppError
from app.messages import service
from app.messages.endpoints import SEND_ROLES, accepted_json, checked_key
from app.messages.schemas import MessageCreate

if TYPE_CHECKING:
    from fastapi import FastAPI

    from app.runtime import Runtime

log = logging.getLogger("icc.api")

PATH = "/v1/messages"
_validate = MessageCreate.__pydantic_validator__.validate_python
_JSON = b"application/json"
_REPLAY = [(b"idempotency-replay", b"true")]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _HandOver(Exception):
    """The request is not an ordinary one: the FastAPI route answers it."""


class _Failed(Exception):
    """Looking the key up failed: answered as the route answers that error (handing over
    would look it up a second time)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class FastSend:
    """The ordinary ``POST /v1/messages``; ``route`` (the FastAPI app) answers the rest."""

    def __init__(self, app: FastAPI, route: ASGIApp, *, max_body: int) -> None:
        self.app, self.route, self.max_body = app, route, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app  # as Starlette sets it: handlers may read request.app
        received: list[Message] = []
        try:
            runtime: Runtime = self.app.state.runtime
            headers = _headers(scope)
            body = await self._body(headers, receive, received)
            principal = await self._principal(runtime, headers)
            request = self._request(principal.owner, headers, body)
            accepted = await runtime.accept(request)
        except _Failed as failed:
            await self._error(scope, receive, send, failed.error)
            return
        except _HandOver:  # nothing is accepted yet
            await self.route(scope, _replaying(received, receive), send)
            return
        except Exception as exc:  # from accepting: what the route's handlers make of it
            await self._error(scope, receive, send, exc)
            return
        content = accepted_json(accepted).encode()
        # in Starlette's order: the route's own headers, then the length and the type
        headers_out = [(b"content-length", b"%d" % len(content)), (b"content-type", _JSON)]
        if accepted.replayed:
            headers_out = _REPLAY + headers_out
        await send({"type": "http.response.start", "status": 202, "headers": headers_out})
        await send({"type": "http.response.body", "body": content})

    async def _body(
        self, headers: dict[bytes, bytes], receive: Receive, received: list[Message]
    ) -> bytes:
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        declared = headers.get(b"content-length")
        if media != _JSON or (declared is not None and not declared.isdigit()):
            raise _HandOver
        if declared is not None and int(declared) > self.max_body:
            raise _HandOver
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                raise _HandOver  # a disconnect: the route sees it as it would have
            size += len(message.get("body", b""))
            if size > self.max_body:
                raise _HandOver
            if not message.get("more_body", False):
                break
        return b"".join(m.get("body", b"") for m in received)

    async def _principal(self, runtime: Runtime, headers: dict[bytes, bytes]) -> Any:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _HandOver
        try:
            principal = await runtime.keys.resolve(runtime.read_sessionmaker, token)
        except Exception as exc:
            raise _Failed(exc) from exc
        if principal is None or principal.role not in SEND_ROLES:
            raise _HandOver
        return principal

    def _request(
        self, owner: str, headers: dict[bytes, bytes], body: bytes
    ) -> service.AcceptRequest:
        try:
            item = _validate(json.loads(body))
            header = headers.get(b"idempotency-key")
            key = checked_key(None if header is None else header.decode("latin-1"))
            key = service.resolve_idempotency_key(item.idempotency_key, key)
        except (ValueError, ValidationError, AppError):  # JSON, the model, the key's checks
            raise _HandOver from None
        return service.AcceptRequest(item.scenario, owner, item, key)

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """Answer as the route's stack would: the handler of the closest class; for the
        catch-all one (Starlette's ServerErrorMiddleware), the 500 is sent and the error
        raised on to the server, which logs it."""
        caught, handler = _handler_for(self.app, exc)
        if handler is None:
            raise exc
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)
        if caught is Exception:
            raise exc


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name (ASGI servers lower-case them); a header sent
    twice keeps its first value, as Starlette's ``Headers.get`` does. (Content-Length twice
    is handed over: BodySizeLimit reads the last one.)"""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in found:
            if name == b"content-length":
                raise _HandOver
            continue
        found[name] = value
    if scope["query_string"] or scope.get("root_path"):
        raise _HandOver
    return found


def _handler_for(app: FastAPI, exc: Exception) -> tuple[type | None, Any]:
    """The exception handler Starlette would pick (the closest class in the MRO) and its
    class."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return cls, handlers[cls]
    return None, None


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives back the messages already read."""
    pending = list(received)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
