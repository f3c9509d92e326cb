"""Templates: versioned content per channel, previewed before it is published."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from app.auth.schemas import Role
from app.auth.service import Principal
from app.deps import MarketerPrincipal, ReadSessionDep, SessionDep, require
from app.errors import ERROR_RESPONSES, ValidationFailed, error_responses
from app.idempotency.service import IdempotencyDep, idempotent_responses
from app.pagination import Cursor, Limit, decode_cursor, paginate
from app.scenarios.schemas import Channel
from templates import repository, service
from templates.schemas import (
    PreviewOut,
    PreviewRequest,
    TemplateCreate,
    TemplateDetail,
    TemplateList,
    TemplateOut,
    VersionCreate,
    VersionList,
    VersionOut,
    VersionUpdate,
)

router = APIRouter(prefix="/v1/templates", tags=["templates"], responses=ERROR_RESPONSES)
_404 = error_responses(404)
_404_409 = error_responses(404, 409)

# Analysts may read templates (to understand what an experiment sent); marketers edit them.
TemplateReader = Annotated[Principal, Depends(require(Role.marketer, Role.analyst))]
VersionNumber = Annotated[int, Path(ge=1, le=2_147_483_647, description="version number")]


@router.post(
    "",
    status_code=201,
    response_model=TemplateOut,
    summary="Create a template (with an optional first draft)",
    responses=idempotent_responses(),
)
async def create_template(
    body: TemplateCreate,
    session: SessionDep,
    principal: MarketerPrincipal,
    idempotency: IdempotencyDep,
) -> TemplateOut | JSONResponse:
    async def create() -> TemplateOut:
        return service.template_out(await service.create(session, body))

    return await idempotency.run(principal.owner, body, create)


@router.get("", response_model=TemplateList, summary="List templates by key")
async def list_templates(
    session: ReadSessionDep,
    _: TemplateReader,
    channel: Annotated[Channel | None, Query(description="only this channel's")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TemplateList:
    rows = await repository.list_page(
        session,
        after_key=decode_cursor(cursor),
        limit=limit + 1,
        channel=channel.value if channel else None,
    )
    rows, cursor_out = paginate(rows, limit, lambda t: t.key)
    return TemplateList(items=[service.template_out(t) for t in rows], next_cursor=cursor_out)


@router.post(
    "/preview",
    response_model=PreviewOut,
    summary="Render a template version or a draft with sample variables (SMS: length)",
    responses=_404,
)
async def preview_template(
    body: PreviewRequest, session: ReadSessionDep, _: MarketerPrincipal
) -> PreviewOut:
    return await service.preview(session, body)


@router.get(
    "/{key}",
    response_model=TemplateDetail,
    summary="One template with its current version",
    responses=_404,
)
async def get_template(key: str, session: ReadSessionDep, _: TemplateReader) -> TemplateDetail:
    return await service.detail(session, await service.get(session, key))


@router.post(
    "/{key}/versions",
    status_code=201,
    response_model=VersionOut,
    summary="Create a draft version",
    responses=idempotent_responses(404),
)
async def create_version(
    key: str,
    body: VersionCreate,
    session: SessionDep,
    principal: MarketerPrincipal,
    idempotency: IdempotencyDep,
) -> VersionOut | JSONResponse:
    async def create() -> VersionOut:
        return service.version_out(*await service.create_version(session, key, body))

    return await idempotency.run(principal.owner, body, create)


@router.get(
    "/{key}/versions",
    response_model=VersionList,
    summary="List versions, newest first",
    responses=_404,
)
async def list_versions(
    key: str, session: ReadSessionDep, _: TemplateReader, limit: Limit = 50, cursor: Cursor = None
) -> VersionList:
    template = await service.get(session, key)
    rows = await repository.versions_page(
        session, template.id, before=_version_cursor(cursor), limit=limit + 1
    )
    rows, cursor_out = paginate(rows, limit, lambda v: str(v.version))
    return VersionList(
        items=[service.version_out(template, v) for v in rows], next_cursor=cursor_out
    )


_VERSION = re.compile(r"[1-9][0-9]{0,9}")
_MAX_VERSION = 2_147_483_647  # the column's range on PostgreSQL


def _version_cursor(cursor: str | None) -> int | None:
    """The version a page starts before; a cursor no page made is a 422 (not a 500 from
    int() or the database: "²" is a digit to str.isdigit, 20 digits overflow the column)."""
    before = decode_cursor(cursor)
    if before is None:
        return None
    if not _VERSION.fullmatch(before) or int(before) > _MAX_VERSION:
        raise ValidationFailed.field("cursor", "not a cursor from a previous page")
    return int(before)


@router.get(
    "/{key}/versions/{version}", response_model=VersionOut, summary="One version", responses=_404
)
async def get_version(
    key: str, version: VersionNumber, session: ReadSessionDep, _: TemplateReader
) -> VersionOut:
    template = await service.get(session, key)
    return service.version_out(template, await service.get_version(session, template, version))


@router.put(
    "/{key}/versions/{version}",
    response_model=VersionOut,
    summary="Edit a draft (a published version is immutable: 409)",
    responses=_404_409,
)
async def update_version(
    key: str, version: VersionNumber, body: VersionUpdate, session: SessionDep, _: MarketerPrincipal
) -> VersionOut:
    template, row = await service.update_version(session, key, version, body)
    return service.version_out(template, row)


@router.post(
    "/{key}/versions/{version}/publish",
    response_model=VersionOut,
    summary="Publish a draft: it becomes the current version (422 naming what is wrong)",
    responses=_404_409,
)
async def publish_version(
    key: str, version: VersionNumber, session: SessionDep, _: MarketerPrincipal
) -> VersionOut:
    template, row = await service.publish(session, key, version)
    return service.version_out(template, row)
