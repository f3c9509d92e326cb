"""One error base class carrying its status; every error renders as
``{"error": "<Name>", "detail": "...", "fields": [...]?}``."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import refused_text, too_long

log = logging.getLogger("icc.errors")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """The shape of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "ValidationError",
                    "detail": "variables.amount: required by the scenario",
                    "fields": [
                        {"field": "variables.amount", "message": "required by the scenario"}
                    ],
                }
            ]
        }
    )

    error: str
    detail: str
    fields: list[FieldError] | None = None


class AppError(Exception):
    status_code = 400
    name = "BadRequest"

    def __init__(self, detail: str, *, fields: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return error_body(self.name, self.detail, self.fields)


class Unauthorized(AppError):
    status_code = 401
    name = "Unauthorized"


class Forbidden(AppError):
    status_code = 403
    name = "Forbidden"


class NotFound(AppError):
    status_code = 404
    name = "NotFound"


class Conflict(AppError):
    status_code = 409
    name = "Conflict"


class IdempotencyConflict(Conflict):
    name = "IdempotencyKeyReused"


class InternalError(AppError):
    status_code = 500
    name = "InternalError"


class PayloadTooLarge(AppError):
    status_code = 413
    name = "PayloadTooLarge"


class ValidationFailed(AppError):
    status_code = 422
    name = "ValidationError"

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field}: {message}", fields=[FieldError(field=field, message=message)])


def error_body(name: str, detail: str, fields: list[FieldError] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": name, "detail": detail}
    if fields:
        body["fields"] = [f.model_dump() for f in fields]
    return body


def field_errors_from_pydantic(
    errors: Any, *, skip_prefix: int = 0, root: str = "body"
) -> list[FieldError]:
    """Pydantic errors as our field list (``variables.amount``, ``recipient.phone``)."""
    out = []
    for err in errors:
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            # the location is a character offset, not a field
            out.append(FieldError(field=root, message=f"{message} (the body is not valid JSON)"))
            continue
        loc = [str(part) for part in err.get("loc", ())][skip_prefix:]
        out.append(FieldError(field=".".join(loc) or root, message=message))
    return out


_HTTP_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "ValidationError",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    503: "Unavailable",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": name}
    for code, name in ((401, "Unauthorized"), (403, "Forbidden"), (422, "ValidationError"))
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the given error statuses, each with the ErrorBody schema."""
    return {
        code: {"model": ErrorBody, "description": _HTTP_NAMES.get(code, "Error")} for code in codes
    }


def _allowed_methods(request: Request) -> str:
    """The methods the API documents for the request's path (HEAD with GET, as served)."""
    methods: set[str] = set()
    for pattern, allowed in _path_methods(request.app):
        if pattern.fullmatch(request.url.path):
            methods |= allowed
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_PATH_PARAMETER = re.compile(r"\\\{[^/]+?\\\}")  # "{key}" once re.escape'd


def _path_methods(app: FastAPI) -> list[tuple[re.Pattern[str], set[str]]]:
    """(path pattern, methods) of every documented path, made once from the OpenAPI."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "path_methods", None)
    if table is None:
        table = []
        for path, operations in app.openapi()["paths"].items():
            pattern = re.compile(_PATH_PARAMETER.sub("[^/]+", re.escape(path)))
            table.append((pattern, {m.upper() for m in operations} & _HTTP_METHODS))
        app.state.path_methods = table
    return table


# Routes that authorize by a plain call in their body (the hot send route: no dependency
# solving) register that call here, so that a bad body from a caller without the right key
# gets the 401/403 a dependency would have given, not the body's validation errors.
CHECKED_BEFORE_THE_BODY: dict[Any, Callable[[Request], Awaitable[object]]] = {}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        check = CHECKED_BEFORE_THE_BODY.get(request.scope.get("endpoint"))
        if check is not None:
            try:
                await check(request)
            except AppError as refused:  # the caller learns no more than 401 or 403
                return JSONResponse(refused.body(), status_code=refused.status_code)
        fields = field_errors_from_pydantic(exc.errors(), skip_prefix=1)
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields) or "invalid request"
        return JSONResponse(error_body("ValidationError", detail, fields), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's answer to a JSON body that is not UTF-8: a validation error as any
            # other body that is not JSON (422, documented on every route)
            field = FieldError(field="body", message="the body is not valid JSON (not UTF-8)")
            return JSONResponse(
                error_body("ValidationError", f"{field.field}: {field.message}", [field]),
                status_code=422,
            )
        headers = exc.headers
        if exc.status_code == 405 and (allowed := _allowed_methods(request)):
            # Starlette names the methods of the first route of the path only (RFC 9110: all);
            # a path outside the OpenAPI document (/docs) keeps Starlette's
            headers = {**(headers or {}), "Allow": allowed}
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        return JSONResponse(
            error_body(name, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body("InternalError", "unexpected error; it has been logged"), status_code=500
        )

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if refused_text(exc):  # PostgreSQL refusing a NUL that app.nul_guard let through
            detail = "a value holds a character the database cannot store (NUL, \\u0000)"
            return JSONResponse(error_body("ValidationError", detail), status_code=422)
        if too_long(exc):  # a length nothing checked: the input's fault, and a check to add
            log.warning("a value longer than its column", exc_info=exc)
            detail = "a value is longer than the database stores; shorten it"
            return JSONResponse(error_body("ValidationError", detail), status_code=422)
        return await _unexpected(request, exc)

    # handled here, not by the catch-all, which Starlette re-raises to the server
    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(asyncpg.PostgresError, _database)
