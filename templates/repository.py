"""Queries of templates and their versions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from templates.models import Template, TemplateVersion


async def by_key(session: AsyncSession, key: str, *, lock: bool = False) -> Template | None:
    """The template ``key``; ``lock``: held until the transaction ends (PostgreSQL; SQLite
    writers are serialized anyway), so that version numbers and publishes never race."""
    stmt = select(Template).where(Template.key == key)
    if lock:
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


async def by_keys(session: AsyncSession, keys: Sequence[str]) -> dict[str, Template]:
    rows = await session.scalars(select(Template).where(Template.key.in_(list(keys))))
    return {t.key: t for t in rows}


async def list_page(
    session: AsyncSession, *, after_key: str | None, limit: int, channel: str | None
) -> list[Template]:
    stmt = select(Template).order_by(Template.key).limit(limit)
    if after_key:
        stmt = stmt.where(Template.key > after_key)
    if channel:
        stmt = stmt.where(Template.channel == channel)
    return list((await session.scalars(stmt)).all())


async def version(session: AsyncSession, template_id: str, number: int) -> TemplateVersion | None:
    return await session.scalar(
        select(TemplateVersion).where(
            TemplateVersion.template_id == template_id, TemplateVersion.version == number
        )
    )


async def versions_page(
    session: AsyncSession, template_id: str, *, before: int | None, limit: int
) -> list[TemplateVersion]:
    """Newest first."""
    stmt = (
        select(TemplateVersion)
        .where(TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.version.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(TemplateVersion.version < before)
    return list((await session.scalars(stmt)).all())


async def current_versions(
    session: AsyncSession, keys: Sequence[str]
) -> dict[str, tuple[Template, TemplateVersion]]:
    """Template key -> (template, its current published version), in one query."""
    rows = await session.execute(
        select(Template, TemplateVersion)
        .join(
            TemplateVersion,
            and_(
                TemplateVersion.template_id == Template.id,
                TemplateVersion.version == Template.current_version,
            ),
        )
        .where(Template.key.in_(list(keys)))
    )
    return {template.key: (template, version) for template, version in rows}


async def add(session: AsyncSession, *rows: Template | TemplateVersion) -> None:
    session.add_all(rows)
    await session.flush()
