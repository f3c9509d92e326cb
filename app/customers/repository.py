"""All SQL of customers: profiles, bulk upserts, consent and the attribute schema."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    Table,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.attributes import ATTRIBUTE_NAME_PATTERN
from app.customers.models import (
    Customer,
    CustomerAttribute,
    CustomerConsent,
    CustomerErasure,
    CustomerView,
)
from app.db import (
    UTCDateTime,
    dialect_name,
    hold_locks,
    lock_bucket,
    one_of,
    read_sqlite_utc,
    sqlite_select_in,
)
from app.timeutil import as_utc, utcnow

CUSTOMERS: Table = Customer.__table__  # type: ignore[assignment]
CONSENTS: Table = CustomerConsent.__table__  # type: ignore[assignment]
# the columns a profile write may set (besides attributes, which may be merged)
PROFILE_COLUMNS = ("name", "phone", "email", "wechat_openid", "locale", "timezone", "tags")
CHUNK = 500
_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)


async def get(session: AsyncSession, customer_id: str) -> Customer | None:
    return await session.get(Customer, customer_id)


async def get_many(session: AsyncSession, ids: Sequence[str]) -> dict[str, CustomerView]:
    """The stored customers among ``ids``, as the send path reads them."""
    unique = list(dict.fromkeys(ids))
    if dialect_name(session) == "sqlite":
        rows = await sqlite_select_in(session, _VIEWS_SQLITE, unique)
        # the two JSON columns decoded as the engine's deserializer does
        return {r[0]: _view(*r[:7], orjson.loads(r[7]), orjson.loads(r[8])) for r in rows}
    found: dict[str, CustomerView] = {}
    for start in range(0, len(unique), CHUNK):
        chosen = select(*_VIEW_COLUMNS).where(
            one_of(session, CUSTOMERS.c.id, unique[start : start + CHUNK])
        )
        found.update((r[0], _view(*r)) for r in await session.execute(chosen))
    return found


def _view(*values: Any) -> CustomerView:
    """A view from a row's values, in _VIEW_FIELDS' order (a row's length is not typed)."""
    return CustomerView(*values)


_VIEW_FIELDS = [field.name for field in fields(CustomerView)]  # in the view's order
_VIEW_COLUMNS = tuple(CUSTOMERS.c[name] for name in _VIEW_FIELDS)
# get_many on SQLite, the ids as one parameter (db.sqlite_select_in)
_VIEWS_SQLITE = (
    f"SELECT {', '.join(_VIEW_FIELDS)} FROM customers WHERE id IN (SELECT value FROM json_each(?))"
)


async def upsert(session: AsyncSession, customer_id: str, **values: Any) -> Customer:
    """Set the given fields of a customer, creating it if needed (no validation: demo data)."""
    now = utcnow()
    customer = await session.get(Customer, customer_id)
    if customer is None:
        customer = Customer(id=customer_id, created_at=now, attributes={}, tags=[])
        session.add(customer)
    for name, value in values.items():
        setattr(customer, name, value)
    customer.updated_at = now
    await session.flush()
    return customer


async def list_page(session: AsyncSession, *, after_id: str | None, limit: int) -> list[Customer]:
    stmt = select(Customer).order_by(Customer.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(Customer.id > after_id)
    return list((await session.scalars(stmt)).all())


async def existing_ids(session: AsyncSession, ids: Collection[str]) -> set[str]:
    found: set[str] = set()
    unique = list(ids)
    for start in range(0, len(unique), CHUNK):
        rows = await session.scalars(
            select(Customer.id).where(Customer.id.in_(unique[start : start + CHUNK]))
        )
        found.update(rows)
    return found


def _merged_attributes(session: AsyncSession, new: Any, replaced: Sequence[str]) -> Any:
    """The stored attributes without the ``replaced`` names, plus the new ones. The names
    are literals (one statement per import, compiled once), checked against the name
    pattern so they are safe to inline."""
    assert all(_NAME.match(n) for n in replaced), replaced
    old = CUSTOMERS.c.attributes
    kept: Any = old
    if dialect_name(session) == "postgresql":
        names = ", ".join(f"'{n}'" for n in replaced)
        if replaced:
            kept = old.op("-")(literal_column(f"ARRAY[{names}]::text[]"))
        return type_coerce(kept, JSONB).op("||")(new)
    if replaced:
        kept = func.json_remove(old, *(literal_column(f"'$.{n}'") for n in replaced))
    return func.json_patch(kept, new)


def upsert_statement(
    session: AsyncSession,
    *,
    columns: Collection[str],
    merge_attributes: Sequence[str] | None,
    now: datetime | None = None,
) -> Any:
    """``INSERT ... ON CONFLICT (id) DO UPDATE`` of many rows, on SQLite and PostgreSQL.
    Existing rows get the given ``columns``; their attributes are replaced, or with
    ``merge_attributes`` only those names are. A row whose values are all the same is not
    touched (nor its updated_at). Rows carry every column but the times: ``now`` (bulk
    imports) is inlined for all rows, saving a datetime conversion per row, which on
    SQLite cost more than the insert; without it rows carry created_at and updated_at."""
    postgres = dialect_name(session) == "postgresql"
    stmt = (pg_insert if postgres else sqlite_insert)(CUSTOMERS)
    if now is not None:
        stamp = _timestamp(session, now)
        stmt = stmt.values(created_at=stamp, updated_at=stamp)
    new = stmt.excluded
    set_: dict[str, Any] = {c: new[c] for c in PROFILE_COLUMNS if c in columns}
    set_["attributes"] = (
        new.attributes
        if merge_attributes is None
        else _merged_attributes(session, new.attributes, merge_attributes)
    )
    changed = or_(*(CUSTOMERS.c[c].is_distinct_from(v) for c, v in set_.items()))
    set_["updated_at"] = new.updated_at
    stmt = stmt.on_conflict_do_update(index_elements=[CUSTOMERS.c.id], set_=set_, where=changed)
    if postgres:
        # asyncpg counts no rows for executemany: RETURNING tells the rows written, and
        # xmax = 0 those inserted (an updated row version carries the updating transaction)
        return stmt.returning(literal_column("(xmax = 0)", Boolean).label("inserted"))
    return stmt


def _timestamp(session: AsyncSession, now: datetime) -> Any:
    """``now`` as a SQL literal in the form the column stores it."""
    bind = session.bind
    assert bind is not None
    if bind.dialect.name == "postgresql":
        return literal_column(f"'{as_utc(now).isoformat()}'::timestamptz", UTCDateTime())
    text = UTCDateTime().bind_processor(bind.dialect)(now)  # type: ignore[misc]
    return literal_column(f"'{text}'", UTCDateTime())


async def upsert_rows(
    session: AsyncSession, stmt: Any, rows: Sequence[dict[str, Any]]
) -> tuple[int, int]:
    """Run an :func:`upsert_statement` over rows (unique ids); (inserted, updated)."""
    if not rows:
        return 0, 0
    if dialect_name(session) == "postgresql":
        inserted = list((await session.execute(stmt, list(rows))).scalars())
        return sum(inserted), len(inserted) - sum(inserted)
    # SQLite: the rows already there, then the driver's count of rows written. (Not so on
    # PostgreSQL: a cached generic plan of this lookup, made while the table was small, can
    # scan the whole table; an import into a new table slowed down quadratically.)
    existing = await existing_ids(session, [r["id"] for r in rows])
    written = int((await session.execute(stmt, list(rows))).rowcount)  # type: ignore[attr-defined]
    new = len(rows) - len(existing)
    return new, written - new


async def delete_customer(session: AsyncSession, customer_id: str) -> bool:
    """Delete the profile; its consent rows go with it (ON DELETE CASCADE)."""
    await session.execute(delete(CONSENTS).where(CONSENTS.c.customer_id == customer_id))
    result = await session.execute(delete(CUSTOMERS).where(CUSTOMERS.c.id == customer_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def ids_by_phones(session: AsyncSession, phones: Collection[str]) -> list[str]:
    if not phones:
        return []
    rows = await session.scalars(select(Customer.id).where(Customer.phone.in_(list(phones))))
    return list(rows)


async def phones_of(session: AsyncSession, ids: Sequence[str]) -> dict[str, str]:
    """customer id -> phone, of those with one."""
    found: dict[str, str] = {}
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        rows = await session.execute(
            select(Customer.id, Customer.phone).where(
                Customer.id.in_(chunk), Customer.phone.is_not(None)
            )
        )
        found.update((customer_id, phone) for customer_id, phone in rows if phone)
    return found


async def ids_by_openid(session: AsyncSession, openid: str) -> list[str]:
    return list(await session.scalars(select(Customer.id).where(Customer.wechat_openid == openid)))


async def openids_in_use(session: AsyncSession, openids: Collection[str]) -> set[str]:
    if not openids:
        return set()
    stmt = select(Customer.wechat_openid).where(Customer.wechat_openid.in_(list(openids)))
    return {o for o in await session.scalars(stmt) if o}


async def phones_in_use(session: AsyncSession, phones: Collection[str]) -> bool:
    if not phones:
        return False
    stmt = select(exists().where(Customer.phone.in_(list(phones))))
    return bool(await session.scalar(stmt))


# consent


ConsentRow = tuple[str, str, bool, str, datetime]  # channel, purpose, granted, source, at


async def consents_of(
    session: AsyncSession, customer_ids: Sequence[str]
) -> dict[str, list[ConsentRow]]:
    """The recorded consent decisions of each customer (those with none are left out)."""
    c = CONSENTS.c
    found: dict[str, list[ConsentRow]] = {}
    unique = list(dict.fromkeys(customer_ids))
    if dialect_name(session) == "sqlite":
        for customer_id, channel, purpose, granted, source, at in await sqlite_select_in(
            session, _CONSENTS_SQLITE, unique
        ):
            row = (channel, purpose, bool(granted), source, read_sqlite_utc(at))
            found.setdefault(customer_id, []).append(row)
        return found
    for start in range(0, len(unique), 500):
        rows = await session.execute(
            select(c.customer_id, c.channel, c.purpose, c.granted, c.source, c.updated_at).where(
                one_of(session, c.customer_id, unique[start : start + 500])
            )
        )
        for r in rows:
            found.setdefault(r.customer_id, []).append(
                (r.channel, r.purpose, r.granted, r.source, r.updated_at)
            )
    return found


# consents_of on SQLite, the ids as one parameter (db.sqlite_select_in): for every group of
# sends deciding marketing patches
_CONSENTS_SQLITE = (
    "SELECT customer_id, channel, purpose, granted, source, updated_at FROM customer_consents"
    " WHERE customer_id IN (SELECT value FROM json_each(?))"
)


async def record_consents(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert (customer_id, channel, purpose) → granted, source, updated_at. The later
    decision wins: a reply reported late does not undo a newer opt-in."""
    if not rows:
        return
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    stmt = insert(CONSENTS)
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[CONSENTS.c.customer_id, CONSENTS.c.channel, CONSENTS.c.purpose],
        set_={"granted": new.granted, "source": new.source, "updated_at": new.updated_at},
        where=CONSENTS.c.updated_at <= new.updated_at,
    )
    await session.execute(stmt, list(rows))


# the declared attribute schema


async def attribute_specs(session: AsyncSession) -> list[CustomerAttribute]:
    rows = await session.scalars(select(CustomerAttribute).order_by(CustomerAttribute.name))
    return list(rows.all())


async def attribute(session: AsyncSession, name: str) -> CustomerAttribute | None:
    return await session.get(CustomerAttribute, name)


async def add_attribute(session: AsyncSession, spec: CustomerAttribute) -> None:
    session.add(spec)
    await session.flush()


async def delete_attribute(session: AsyncSession, spec: CustomerAttribute) -> None:
    await session.delete(spec)
    await session.flush()


async def attribute_in_use(session: AsyncSession, name: str) -> bool:
    """Whether any customer holds a value for the attribute (a full scan: rare admin use)."""
    if dialect_name(session) == "postgresql":
        held = type_coerce(Customer.attributes, JSONB).has_key(name)
    else:
        held = func.json_type(Customer.attributes, f"$.{name}").is_not(None)
    return bool(await session.scalar(select(exists().where(held))))


# Erasure against sends being accepted for the same customer, on PostgreSQL: an accept
# holds its customers' buckets shared until it commits, and reads which of them are being
# erased (customer_erasures); an erasure first takes its customer's bucket exclusively, only
# to write that marker (and commit), then erases and deletes the marker. So an erasure never
# runs beside a send it cannot see yet (which would keep the customer's data and go out):
# sends accepted before the marker are erased, sends after it are refused until the erasure
# is done, and other customers' sends never wait for the erasure itself. Buckets, not one
# lock per customer: a batch of 10,000 must not fill PostgreSQL's lock table
# (max_locks_per_transaction).
ERASURE_LOCK_NAMESPACE = 0x1CC0003
ERASURE_BUCKETS = 64
ERASURE_LOCK_PATIENCE = 10.0  # seconds of trying before queueing for the bucket
ERASURE_LOCK_POLL = 0.02
# a marker not renewed for this long is of an erasure that died: its customer is served
# again (a running erasure renews it every quarter of this, app/customers/erasure.py)
ERASURE_MARKER_TTL = timedelta(hours=1)
ERASURES: Table = CustomerErasure.__table__  # type: ignore[assignment]


def _bucket(customer_id: str) -> int:
    return lock_bucket(customer_id, ERASURE_BUCKETS)


async def hold_customers(session: AsyncSession, customer_ids: Collection[str]) -> set[str]:
    """Take the customers' erasure buckets shared (see above) until the transaction ends,
    and return those of them being erased, whom nothing may be sent to now; nothing on
    SQLite, whose one writer runs an erasure and an accept one after the other."""
    if dialect_name(session) != "postgresql" or not customer_ids:
        return set()
    buckets = {_bucket(c) for c in customer_ids}
    await hold_locks(session, ERASURE_LOCK_NAMESPACE, buckets, shared=True)
    # A statement of its own, after the locks: its snapshot shows markers written meanwhile.
    # All of them (erasures under way are few), not looked up by a batch's 10,000 ids.
    erasing = await session.scalars(
        select(ERASURES.c.customer_id).where(ERASURES.c.started_at > utcnow() - ERASURE_MARKER_TTL)
    )
    return set(erasing) & set(customer_ids)


async def mark_erasure(session: AsyncSession, customer_id: str) -> None:
    """Once the sends of the customer being accepted have committed (PostgreSQL; nothing on
    SQLite), mark the customer as being erased: commit it before erasing. The customer's
    bucket is held exclusively until then. Asked for and waiting, it would queue every new
    accept of the bucket behind it (PostgreSQL grants in order), and a group of a few
    hundred customers covers most buckets: so it is tried until accepts leave a gap, and
    waited for only after ``ERASURE_LOCK_PATIENCE``."""
    if dialect_name(session) != "postgresql":
        return
    params = {"namespace": ERASURE_LOCK_NAMESPACE, "bucket": _bucket(customer_id)}
    tried = text("SELECT pg_try_advisory_xact_lock(:namespace, :bucket)")
    deadline = time.monotonic() + ERASURE_LOCK_PATIENCE
    while time.monotonic() < deadline:
        if await session.scalar(tried, params):
            break
        await asyncio.sleep(ERASURE_LOCK_POLL)
    else:
        await session.execute(text("SELECT pg_advisory_xact_lock(:namespace, :bucket)"), params)
    now = utcnow()
    # markers of erasures that died are ignored already; clear them out
    await session.execute(delete(ERASURES).where(ERASURES.c.started_at <= now - ERASURE_MARKER_TTL))
    marked = pg_insert(ERASURES).values(customer_id=customer_id, started_at=now)
    await session.execute(
        marked.on_conflict_do_update(index_elements=["customer_id"], set_={"started_at": now})
    )


async def renew_erasure(session: AsyncSession, customer_id: str) -> bool:
    """Renew the marker of an erasure still running; whether there was one to renew. One
    that its erasure's transaction is deleting (locked) is skipped rather than waited for:
    the erasure is ending. A deleted one is not written again."""
    mine = ERASURES.c.customer_id == customer_id
    unlocked = select(ERASURES.c.customer_id).where(mine).with_for_update(skip_locked=True)
    renewed = await session.execute(
        update(ERASURES)
        .where(mine, ERASURES.c.customer_id.in_(unlocked))
        .values(started_at=utcnow())
    )
    return bool(renewed.rowcount)  # type: ignore[attr-defined]


async def unmark_erasure(session: AsyncSession, customer_id: str) -> None:
    """The erasure is done (with this transaction)."""
    await session.execute(delete(ERASURES).where(ERASURES.c.customer_id == customer_id))
