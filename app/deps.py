"""FastAPI dependencies as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.schemas import Role
from app.auth.service import Principal
from app.db import commit
from app.errors import Forbidden, Unauthorized
from app.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain def dependency in a worker thread, a hop per request
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the endpoint succeeds (then the
    after-commit hooks run, e.g. enqueueing), rolled back when it raises."""
    async with runtime.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await commit(session)


# scope="function": commit (and enqueue) before the response goes out, never after
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """A session for endpoints that only read (no write lock on SQLite)."""
    async with runtime.read_sessionmaker() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer icc_...`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

# The security requirement of routes that authorize by hand (`authorize`), as FastAPI writes it
# for routes that use the `_bearer` dependency.
BEARER_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}]


async def authorize(request: Request, allowed: frozenset[Role]) -> Principal:
    """The caller's principal if it holds one of the ``allowed`` roles; 401 or 403 otherwise.
    A plain call, not a dependency: the hot send route saves FastAPI's dependency solving."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send an API key as `Authorization: Bearer <key>`")
    runtime: Runtime = request.app.state.runtime
    # Cached; on a miss a short session of its own, not the request's transaction.
    principal = await runtime.keys.resolve(runtime.read_sessionmaker, token)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise Forbidden(f"role {principal.role.value!r} may not do this; allowed: {names}")
    return principal


def roles(*named: Role) -> frozenset[Role]:
    """The roles a route admits: those named, and admin always."""
    return frozenset({*named, Role.admin})


def require(*named: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting the given roles (admin is always admitted)."""
    allowed = roles(*named)

    # `_bearer` is a parameter only so that OpenAPI documents the security scheme.
    async def check(request: Request, _: Credentials) -> Principal:
        return await authorize(request, allowed)

    return check


SystemPrincipal = Annotated[Principal, Depends(require(Role.system))]
ReaderPrincipal = Annotated[Principal, Depends(require(Role.system, Role.analyst))]
MarketerPrincipal = Annotated[Principal, Depends(require(Role.marketer))]
AnalystPrincipal = Annotated[Principal, Depends(require(Role.analyst))]
AdminPrincipal = Annotated[Principal, Depends(require())]
