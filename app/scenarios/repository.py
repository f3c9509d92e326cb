from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.scenarios.models import Scenario
from templates.models import Template


async def by_key(session: AsyncSession, key: str) -> Scenario | None:
    return await session.scalar(select(Scenario).where(Scenario.key == key))


async def list_page(session: AsyncSession, *, after_key: str | None, limit: int) -> list[Scenario]:
    stmt = select(Scenario).order_by(Scenario.key).limit(limit)
    if after_key:
        stmt = stmt.where(Scenario.key > after_key)
    return list((await session.scalars(stmt)).all())


async def templates_by_keys(session: AsyncSession, keys: Sequence[str]) -> dict[str, Template]:
    rows = await session.scalars(select(Template).where(Template.key.in_(list(keys))))
    return {t.key: t for t in rows}


async def add(session: AsyncSession, *rows: Scenario | Template) -> None:
    session.add_all(rows)
    await session.flush()
