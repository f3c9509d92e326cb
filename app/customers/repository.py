from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Customer
from app.timeutil import utcnow


async def get(session: AsyncSession, customer_id: str) -> Customer | None:
    return await session.get(Customer, customer_id)


async def get_many(session: AsyncSession, ids: Sequence[str]) -> dict[str, Customer]:
    found: dict[str, Customer] = {}
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), 500):
        rows = await session.scalars(
            select(Customer).where(Customer.id.in_(unique[start : start + 500]))
        )
        found.update((c.id, c) for c in rows)
    return found


async def upsert(session: AsyncSession, customer_id: str, **values: Any) -> Customer:
    now = utcnow()
    customer = await session.get(Customer, customer_id)
    if customer is None:
        customer = Customer(id=customer_id, created_at=now, attributes={})
        session.add(customer)
    for name, value in values.items():
        setattr(customer, name, value)
    customer.updated_at = now
    await session.flush()
    return customer
