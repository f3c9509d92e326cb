from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.scenarios.models import Scenario


async def by_key(session: AsyncSession, key: str) -> Scenario | None:
    return await session.scalar(select(Scenario).where(Scenario.key == key))


async def list_page(session: AsyncSession, *, after_key: str | None, limit: int) -> list[Scenario]:
    stmt = select(Scenario).order_by(Scenario.key).limit(limit)
    if after_key:
        stmt = stmt.where(Scenario.key > after_key)
    return list((await session.scalars(stmt)).all())


async def add(session: AsyncSession, *rows: Scenario) -> None:
    session.add_all(rows)
    await session.flush()
