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


async def authenticate(
    runtime: Runtime, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send an API key as `Authorization: Bearer <key>`")
    # Cached; on a miss a short session of its own, not the request's transaction.
    principal = await runtime.keys.resolve(runtime.read_sessionmaker, credentials.credentials)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    return principal


def require(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting the given roles (admin is always admitted). Flat on purpose:
    every level of dependencies costs each request on the hot send path."""
    allowed = {*roles, Role.admin}

    async def check(request: Request, credentials: Credentials) -> Principal:
        principal = await authenticate(request.app.state.runtime, credentials)
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Forbidden(f"role {principal.role.value!r} may not do this; allowed: {names}")
        return principal

    return check


SystemPrincipal = Annotated[Principal, Depends(require(Role.system))]
ReaderPrincipal = Annotated[Principal, Depends(require(Role.system, Role.analyst))]
MarketerPrincipal = Annotated[Principal, Depends(require(Role.marketer))]
AnalystPrincipal = Annotated[Principal, Depends(require(Role.analyst))]
AdminPrincipal = Annotated[Principal, Depends(require())]
