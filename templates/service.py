"""Templates and their versions: drafts are editable, published versions are immutable, and
a template's current version is its newest published one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import after_commit
from app.errors import Conflict, FieldError, NotFound, ValidationFailed
from app.ids import new_id
from app.messages.variables import check_variables
from app.scenarios.schemas import Channel, TemplateIn, VariableSpec
from app.timeutil import utcnow
from templates import repository
from templates.checks import check_content
from templates.models import DRAFT, PUBLISHED, Template, TemplateVersion
from templates.renderer import TemplateError, render_channel
from templates.schemas import (
    PreviewOut,
    PreviewRequest,
    SmsLengthOut,
    TemplateCreate,
    TemplateDetail,
    TemplateOut,
    VersionCreate,
    VersionOut,
    VersionStatus,
    VersionUpdate,
)
from templates.sms_length import sms_length, with_signature

_epoch = 0


def publish_epoch() -> int:
    """Grows with every committed publish in this process: caches of what scenarios send
    compare it to drop what they hold (other processes notice within their cache TTL)."""
    return _epoch


async def _bump_epoch() -> None:
    global _epoch
    _epoch += 1


def specs(raw: Iterable[dict[str, Any]]) -> list[VariableSpec]:
    return [VariableSpec.model_validate(v) for v in raw]


def _dump(variables: Iterable[VariableSpec]) -> list[dict[str, Any]]:
    return [v.model_dump(mode="json") for v in variables]


def content_of(version: TemplateVersion) -> TemplateIn:
    return TemplateIn.model_validate(
        {"subject": version.subject, "body": version.body, **(version.options or {})}
    )


def problems(
    channel: str, content: TemplateIn, variables: Iterable[VariableSpec], *, prefix: str
) -> list[FieldError]:
    """Everything publishing refuses in ``content``; fields are ``prefix`` + part."""
    declared = {v.name for v in variables}
    found = [(part, problem) for part, problem in content.channel_problems(Channel(channel))]
    found += [
        (p.path, p.message)
        for p in check_content(content.subject, content.body, content.options(), declared)
    ]
    return [FieldError(field=f"{prefix}{part}", message=message) for part, message in found]


def _refuse(problems: list[FieldError], what: str) -> ValidationFailed:
    listed = "; ".join(f"{p.field}: {p.message}" for p in problems)
    return ValidationFailed(f"{what}: {listed}", fields=problems)


async def get(session: AsyncSession, key: str, *, lock: bool = False) -> Template:
    template = await repository.by_key(session, key, lock=lock)
    if template is None:
        raise NotFound(f"no template {key!r}; create it with POST /v1/templates")
    return template


async def get_version(session: AsyncSession, template: Template, number: int) -> TemplateVersion:
    version = await repository.version(session, template.id, number)
    if version is None:
        raise NotFound(
            f"template {template.key!r} has no version {number} "
            f"(its versions are 1 to {template.latest_version})"
        )
    return version


async def create(session: AsyncSession, data: TemplateCreate) -> Template:
    if await repository.by_key(session, data.key) is not None:
        raise Conflict(
            f"template {data.key!r} already exists; add a version with "
            f"POST /v1/templates/{data.key}/versions"
        )
    now = utcnow()
    template = Template(
        id=new_id("tpl"),
        key=data.key,
        channel=data.channel.value,
        name=data.name or data.key,
        description=data.description,
        variables=_dump(data.variables),
        current_version=None,
        latest_version=0,
        created_at=now,
        updated_at=now,
    )
    await repository.add(session, template)
    if data.content is not None:
        await _add_version(session, template, data.content, data.variables)
    return template


async def _add_version(
    session: AsyncSession, template: Template, content: TemplateIn, variables: list[VariableSpec]
) -> TemplateVersion:
    now = utcnow()
    template.latest_version += 1
    template.updated_at = now
    version = TemplateVersion(
        id=new_id("tpv"),
        template_id=template.id,
        version=template.latest_version,
        status=DRAFT,
        variables=_dump(variables),
        subject=content.subject,
        body=content.body,
        options=content.options(),
        created_at=now,
        updated_at=now,
        published_at=None,
    )
    await repository.add(session, version)
    return version


def _fits_channel(template: Template, content: TemplateIn) -> None:
    misplaced = content.channel_problems(Channel(template.channel))
    if misplaced:
        fields = [FieldError(field=f"content.{part}", message=msg) for part, msg in misplaced]
        raise _refuse(fields, f"content does not fit the {template.channel} template")


async def create_version(
    session: AsyncSession, key: str, data: VersionCreate
) -> tuple[Template, TemplateVersion]:
    template = await get(session, key, lock=True)
    base = None
    if data.from_version is not None:
        base = await repository.version(session, template.id, data.from_version)
        if base is None:
            raise ValidationFailed.field(
                "from_version", f"template {key!r} has no version {data.from_version}"
            )
    if data.content is not None:
        content = data.content
    elif base is not None:
        content = content_of(base)
    else:  # the schema asks for one of the two
        raise ValidationFailed.field("content", "give content, or from_version to copy")
    if data.variables is not None:
        variables = data.variables
    else:
        variables = specs(base.variables if base is not None else template.variables)
    _fits_channel(template, content)
    return template, await _add_version(session, template, content, variables)


async def update_version(
    session: AsyncSession, key: str, number: int, data: VersionUpdate
) -> tuple[Template, TemplateVersion]:
    template = await get(session, key, lock=True)
    version = await get_version(session, template, number)
    if version.status == PUBLISHED:
        raise Conflict(
            f"version {number} of template {key!r} is published and cannot change; "
            f"create a new version with POST /v1/templates/{key}/versions "
            f'{{"from_version": {number}}} and edit that'
        )
    _fits_channel(template, data.content)
    now = utcnow()
    version.subject, version.body = data.content.subject, data.content.body
    version.options = data.content.options()
    if data.variables is not None:
        version.variables = _dump(data.variables)
    version.updated_at = template.updated_at = now
    await session.flush()
    return template, version


async def publish(session: AsyncSession, key: str, number: int) -> tuple[Template, TemplateVersion]:
    """Publish draft ``number``: it becomes the current version. Publishing the current
    version again changes nothing (a safe retry)."""
    template = await get(session, key, lock=True)
    version = await get_version(session, template, number)
    if version.status == PUBLISHED and template.current_version == number:
        return template, version
    current = template.current_version
    if current is not None and current > number:
        raise Conflict(
            f"version {current} of template {key!r} is newer and already published; to send "
            f"version {number}'s content again, copy it: POST /v1/templates/{key}/versions "
            f'{{"from_version": {number}}}, then publish the copy'
        )
    found = problems(
        template.channel, content_of(version), specs(version.variables), prefix="content."
    )
    if found:
        raise _refuse(found, f"version {number} of template {key!r} cannot be published")
    _mark_published(session, template, version)
    await session.flush()
    return template, version


def _mark_published(session: AsyncSession, template: Template, version: TemplateVersion) -> None:
    now = utcnow()
    version.status = PUBLISHED
    version.published_at = version.updated_at = now
    template.current_version = version.version
    template.variables = version.variables
    template.updated_at = now
    after_commit(session, _bump_epoch)


async def publish_inline(
    session: AsyncSession,
    *,
    key: str,
    channel: str,
    content: TemplateIn,
    variables: list[VariableSpec],
    field: str,
) -> Template:
    """A scenario's inline template (older clients): the template ``key`` gets ``content``
    as a new published version, unless that is already its current one."""
    template = await repository.by_key(session, key, lock=True)
    if template is None:
        template = Template(
            id=new_id("tpl"),
            key=key,
            channel=channel,
            name=key,
            description="inline template of a scenario",
            variables=_dump(variables),
            current_version=None,
            latest_version=0,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        await repository.add(session, template)
    elif template.channel != channel:
        raise ValidationFailed.field(
            field, f"template {key!r} exists and is a {template.channel} template"
        )
    elif await _is_current(session, template, content, variables):
        return template
    found = problems(channel, content, variables, prefix=f"{field}.")
    if found:
        raise _refuse(found, f"the {channel} template cannot be published")
    _mark_published(session, template, await _add_version(session, template, content, variables))
    await session.flush()
    return template


async def _is_current(
    session: AsyncSession, template: Template, content: TemplateIn, variables: list[VariableSpec]
) -> bool:
    if template.current_version is None:
        return False
    current = await repository.version(session, template.id, template.current_version)
    return current is not None and (
        (current.subject, current.body, current.options, current.variables)
        == (content.subject, content.body, content.options(), _dump(variables))
    )


def template_out(template: Template) -> TemplateOut:
    return TemplateOut(
        id=template.id,
        key=template.key,
        channel=Channel(template.channel),
        name=template.name,
        description=template.description,
        variables=specs(template.variables),
        current_version=template.current_version,
        latest_version=template.latest_version,
        created_at=template.created_at,
        updated_at=template.updated_at,
    )


def version_out(template: Template, version: TemplateVersion) -> VersionOut:
    content = content_of(version)
    variables = specs(version.variables)
    draft = version.status == DRAFT
    return VersionOut(
        template_key=template.key,
        version=version.version,
        status=VersionStatus(version.status),
        variables=variables,
        content=content,
        problems=problems(template.channel, content, variables, prefix="content.") if draft else [],
        created_at=version.created_at,
        updated_at=version.updated_at,
        published_at=version.published_at,
    )


async def detail(session: AsyncSession, template: Template) -> TemplateDetail:
    current = None
    if template.current_version is not None:
        current = version_out(
            template, await get_version(session, template, template.current_version)
        )
    return TemplateDetail(**template_out(template).model_dump(), current=current)


async def _preview_source(
    session: AsyncSession, data: PreviewRequest
) -> tuple[str, TemplateIn, list[VariableSpec], int | None, str]:
    """(channel, content, declared variables, version, field prefix) to preview."""
    if data.draft is not None:
        draft = data.draft
        return draft.channel.value, draft.content, draft.variables, None, "draft.content."
    template = await get(session, str(data.key))
    number = data.version or template.current_version or template.latest_version
    if not number:
        raise ValidationFailed.field("key", f"template {data.key!r} has no version yet")
    version = await get_version(session, template, number)
    return template.channel, content_of(version), specs(version.variables), number, "content."


async def preview(session: AsyncSession, data: PreviewRequest) -> PreviewOut:
    """Render with sample variables, after the checks publishing makes; SMS: its length."""
    channel, content, variables, number, prefix = await _preview_source(session, data)
    found = problems(channel, content, variables, prefix=prefix)
    if found:
        raise _refuse(found, "the template cannot be rendered")
    errors = check_variables(variables, data.variables)
    if errors:
        raise _refuse(errors, "the sample variables do not fit the declared ones")
    try:
        rendered = render_channel(
            subject=content.subject,
            body=content.body,
            options=content.options(),
            variables=data.variables,
            timezone=data.timezone,
        )
    except TemplateError as exc:
        raise ValidationFailed.field("variables", str(exc)) from None
    sms = None
    if channel == Channel.sms:
        length = sms_length(rendered["body"], signature=data.signature)
        sms = SmsLengthOut(
            text=with_signature(rendered["body"], data.signature),
            encoding=length.encoding,
            characters=length.characters,
            segments=length.segments,
            per_segment=length.per_segment,
        )
    return PreviewOut(
        key=data.key, version=number, channel=Channel(channel), content=rendered, sms=sms
    )
