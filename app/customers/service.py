"""Customer profiles: upsert, read, erasure, consent, and the declared attribute schema."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks import repository as callbacks_repository
from app.customers import fields, repository
from app.customers.attributes import (
    ATTRIBUTE_NAME_PATTERN,
    RESERVED_NAMES,
    AttributeType,
    check_attributes,
    shown,
)
from app.customers.consent import CHANNELS, Consent, Decision, Purpose, consent_state
from app.customers.models import Customer, CustomerAttribute
from app.customers.schemas import (
    AttributeIn,
    AttributeOut,
    ConsentChange,
    ConsentOut,
    CustomerIn,
    CustomerOut,
    CustomerSummary,
)
from app.errors import Conflict, FieldError, NotFound, ValidationFailed
from app.masking import mask_email, mask_name, mask_openid, mask_phone
from app.timeutil import as_utc, utcnow

_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)


# the declared attribute schema


async def attribute_schema(session: AsyncSession) -> dict[str, AttributeType]:
    """Declared attribute name → type. The one place that reads the schema: profile
    validation, the CSV import and segment rule checks all use it."""
    return {a.name: AttributeType(a.type) for a in await repository.attribute_specs(session)}


def _attribute_out(spec: CustomerAttribute) -> AttributeOut:
    return AttributeOut(
        name=spec.name,
        type=AttributeType(spec.type),
        description=spec.description,
        created_at=spec.created_at,
        updated_at=spec.updated_at,
    )


async def get_attribute(session: AsyncSession, name: str) -> AttributeOut:
    spec = await repository.attribute(session, name)
    if spec is None:
        raise NotFound(f"no declared attribute {name!r}; declare it with PUT")
    return _attribute_out(spec)


async def list_attributes(session: AsyncSession) -> list[AttributeOut]:
    return [_attribute_out(a) for a in await repository.attribute_specs(session)]


async def put_attribute(
    session: AsyncSession, name: str, data: AttributeIn
) -> tuple[AttributeOut, bool]:
    """Declare an attribute or change its description; (the attribute, created). Its type
    changes only while no customer holds a value (the values would no longer be valid)."""
    if not _ATTRIBUTE_NAME.match(name):
        raise ValidationFailed.field(
            "name", "1 to 64 lowercase letters, digits or _, starting with a letter"
        )
    if name in RESERVED_NAMES:
        raise ValidationFailed.field("name", f"{name!r} is a profile field, not an attribute")
    now = utcnow()
    spec = await repository.attribute(session, name)
    created = spec is None
    if spec is None:
        spec = CustomerAttribute(
            name=name,
            type=data.type.value,
            description=data.description,
            created_at=now,
            updated_at=now,
        )
        await repository.add_attribute(session, spec)
    elif spec.type != data.type.value and await repository.attribute_in_use(session, name):
        raise Conflict(
            f"customers hold {spec.type} values of {name!r}: clear them first (e.g. import a "
            f"file whose {name} column is empty) or declare an attribute of another name"
        )
    spec.type, spec.description, spec.updated_at = data.type.value, data.description, now
    await session.flush()
    return _attribute_out(spec), created


async def delete_attribute(session: AsyncSession, name: str) -> None:
    spec = await repository.attribute(session, name)
    if spec is None:
        raise NotFound(f"no declared attribute {name!r}")
    if await repository.attribute_in_use(session, name):
        raise Conflict(f"customers hold values of {name!r}: clear them before removing it")
    await repository.delete_attribute(session, spec)


def check_profile_attributes(
    schema: dict[str, AttributeType], values: dict[str, Any]
) -> dict[str, Any]:
    """The stored form of a profile's attributes; a 422 naming each one refused."""
    stored, errors = check_attributes(schema, values)
    if errors:
        found = [FieldError(field=f"attributes.{n}", message=m) for n, m in errors]
        raise ValidationFailed("; ".join(f"{f.field}: {f.message}" for f in found), fields=found)
    return stored


# profiles


async def put_customer(session: AsyncSession, customer_id: str, data: CustomerIn) -> bool:
    """Create or replace a profile (consent is kept); True when it was created."""
    try:
        fields.customer_id(customer_id)
    except fields.InvalidField as exc:
        raise ValidationFailed.field("customer_id", str(exc)) from None
    attributes = check_profile_attributes(await attribute_schema(session), data.attributes)
    now = utcnow()
    row = {
        **data.model_dump(include=set(repository.PROFILE_COLUMNS)),
        "id": customer_id,
        "attributes": attributes,
        "created_at": now,
        "updated_at": now,
    }
    stmt = repository.upsert_statement(
        session, columns=repository.PROFILE_COLUMNS, merge_attributes=None
    )
    inserted, _ = await repository.upsert_rows(session, stmt, [row])
    return inserted == 1


async def _customer(session: AsyncSession, customer_id: str) -> Customer:
    customer = await repository.get(session, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id!r}; create it with PUT /v1/customers/{{id}}")
    return customer


async def consent_of(
    session: AsyncSession, customer_id: str, *, marketing_granted: bool, phone: str | None = None
) -> Consent:
    """Every channel × purpose decision of a customer (recorded or default), and with their
    ``phone``, the opt-out replies from it as sends count them (``with_sms_opt_out``). For
    the send path: ``app.customers.consent.allows(state, channel, purpose)``."""
    states = await consents_of(session, [customer_id], marketing_granted=marketing_granted)
    state = states.get(customer_id) or consent_state([], marketing_granted=marketing_granted)
    if phone:
        replies = await callbacks_repository.sms_opt_outs(session, fields.reply_keys(phone))
        if replies:
            state = with_sms_opt_out(state, max(replies.values()), own_number=True)
    return state


async def consents_of(
    session: AsyncSession, customer_ids: Sequence[str], *, marketing_granted: bool
) -> dict[str, Consent]:
    """The consent of each customer with recorded decisions (the others have the default,
    ``consent_state([], ...)``), in a query per 500 customers."""
    recorded = await repository.consents_of(session, customer_ids)
    return {
        cid: consent_state(rows, marketing_granted=marketing_granted)
        for cid, rows in recorded.items()
    }


def with_sms_opt_out(state: Consent, replied_at: datetime, *, own_number: bool) -> Consent:
    """``state`` for a message whose SMS goes to a number that replied with an opt-out
    ("TD") at ``replied_at``: SMS marketing denied, whoever has the number now (also a
    recipient the platform does not know, or a customer recorded after the reply). Only a
    decision the customer recorded after the reply for their ``own_number`` (an opt-in)
    still wins: it speaks for their number, not for a number given inline."""
    marketing = Purpose.marketing.value
    current = state["sms"][marketing]
    replied_at = as_utc(replied_at)
    if not current.granted or (
        own_number and current.updated_at is not None and as_utc(current.updated_at) > replied_at
    ):
        return state
    denied = Decision(granted=False, source="sms_reply", updated_at=replied_at)
    return state | {"sms": state["sms"] | {marketing: denied}}


def _consent_out(state: Consent) -> ConsentOut:
    return ConsentOut.model_validate(
        {ch: {p: vars(d) for p, d in purposes.items()} for ch, purposes in state.items()}
    )


async def get_customer(
    session: AsyncSession, customer_id: str, *, marketing_granted: bool, masked: bool = False
) -> CustomerOut:
    customer = await _customer(session, customer_id)
    schema = await attribute_schema(session)
    state = await consent_of(
        session, customer_id, marketing_granted=marketing_granted, phone=customer.phone
    )
    contacts = _masked(customer) if masked else _contacts(customer)
    return CustomerOut(
        id=customer.id,
        **contacts,
        locale=customer.locale,
        timezone=customer.timezone,
        attributes={k: shown(schema.get(k), v) for k, v in customer.attributes.items()},
        tags=customer.tags,
        consent=_consent_out(state),
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


def _contacts(c: Customer) -> dict[str, str | None]:
    return {"name": c.name, "phone": c.phone, "email": c.email, "wechat_openid": c.wechat_openid}


def _masked(c: Customer) -> dict[str, str | None]:
    return {
        "name": mask_name(c.name) if c.name else c.name,
        "phone": mask_phone(c.phone) if c.phone else c.phone,
        "email": mask_email(c.email) if c.email else c.email,
        "wechat_openid": mask_openid(c.wechat_openid) if c.wechat_openid else c.wechat_openid,
    }


def summary(customer: Customer) -> CustomerSummary:
    """A list entry, masked (personal data rules: lists never show a name or contact)."""
    return CustomerSummary(
        id=customer.id,
        **_masked(customer),
        locale=customer.locale,
        timezone=customer.timezone,
        tags=customer.tags,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


# consent


async def change_consent(
    session: AsyncSession,
    customer_id: str,
    change: ConsentChange,
    *,
    granted: bool,
    source: str,
    marketing_granted: bool,
) -> ConsentOut:
    """Record an opt-out (``granted=False``) or opt-in for one channel or all of them."""
    customer = await _customer(session, customer_id)
    if change.purpose is Purpose.transactional and change.channel is None and not granted:
        raise ValidationFailed.field(
            "channel",
            "transactional notices are opted out of one channel at a time (a bank must "
            "keep a way to reach its customer)",
        )
    channels = [change.channel.value] if change.channel else list(CHANNELS)
    now = utcnow()
    await repository.record_consents(
        session,
        [
            {
                "customer_id": customer_id,
                "channel": channel,
                "purpose": change.purpose.value,
                "granted": granted,
                "source": source[:120],
                "updated_at": now,
            }
            for channel in channels
        ],
    )
    state = await consent_of(
        session, customer_id, marketing_granted=marketing_granted, phone=customer.phone
    )
    return _consent_out(state)


REPLY_CHANNELS = ("sms", "wechat")  # where a reply names its sender's customers


@dataclass
class ReplyOwners:
    """Whom the replies of a callback came from (:func:`reply_owners`)."""

    customers: dict[str, list[str]]  # sender -> its customers, none of them being erased
    erased: set[str]  # senders whose customers are being erased, none remaining


async def reply_owners(
    session: AsyncSession, senders: Collection[str], *, channel: str
) -> ReplyOwners:
    """The customers each sender's replies on ``channel`` come from: those with its number
    (SMS, in any spelling) or openid (WeChat) now. Their erasure buckets are held until the
    transaction ends (PostgreSQL), so that an erasure starting later finds the replies
    stored and linked. Customers being erased are left out (their erasure has taken their
    replies already): a sender of theirs with no other customer is in ``erased``, and its
    replies are stored as the erasure leaves replies."""
    found: dict[str, list[str]] = {}
    for sender in senders if channel in REPLY_CHANNELS else ():
        if channel == "sms":
            found[sender] = await repository.ids_by_phones(session, fields.phone_variants(sender))
        else:
            found[sender] = await repository.ids_by_openid(session, sender)
    named = {c for ids in found.values() for c in ids}
    erasing = await repository.hold_customers(session, named)
    # read after the hold: a profile whose erasure committed meanwhile is gone
    remaining = await repository.existing_ids(session, named - erasing)
    return ReplyOwners(
        customers={s: [c for c in ids if c in remaining] for s, ids in found.items()},
        erased={s for s, ids in found.items() if erasing & set(ids) and not remaining & set(ids)},
    )


async def opt_out_by_reply(
    session: AsyncSession,
    replies: Sequence[tuple[Collection[str], datetime]],
    *,
    channel: str,
    source: str,
) -> int:
    """Revoke ``channel``'s marketing consent of the customers who sent an opt-out reply
    there (``replies``: its customers, by :func:`reply_owners`, and its time): by their
    phone for SMS ("TD"), by their openid for WeChat ("退订" to the Official Account); the
    number of customers."""
    latest: dict[str, datetime] = {}
    for found, at in replies:
        for customer_id in found:
            at = as_utc(at)
            latest[customer_id] = max(at, latest.get(customer_id, at))
    rows = [
        {
            "customer_id": customer_id,
            "channel": channel,
            "purpose": Purpose.marketing.value,
            "granted": False,
            "source": source[:120],
            "updated_at": at,
        }
        for customer_id, at in latest.items()
    ]
    await repository.record_consents(session, rows)
    return len(rows)
