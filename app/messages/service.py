"""Accepting messages (single and batch) and reading them back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.schemas import Role
from app.auth.service import Principal
from app.customers import repository as customers
from app.db import after_commit
from app.errors import (
    AppError,
    IdempotencyConflict,
    NotFound,
    ValidationFailed,
    field_errors_from_pydantic,
)
from app.masking import mask_contact
from app.messages import repository
from app.messages.compose import Prepared, prepare, request_hash
from app.messages.models import Message
from app.messages.schemas import (
    BatchItemResult,
    BatchResult,
    EventOut,
    MessageCreate,
    MessageItem,
    MessageOut,
    MessageStatus,
)
from app.queue.base import MessageQueue
from app.scenarios.service import load_spec
from app.timeutil import utcnow


@dataclass(frozen=True)
class Accepted:
    message: Message | Prepared
    replayed: bool


def _idempotency_key(body_key: str | None, header_key: str | None) -> str | None:
    if body_key and header_key and body_key != header_key:
        raise ValidationFailed.field(
            "idempotency_key",
            "differs from the Idempotency-Key header; send one or make them equal",
        )
    return body_key or header_key


def _replay(existing: Message, scenario: str, item: MessageItem) -> Accepted:
    if existing.request_hash != request_hash(scenario, item):
        raise IdempotencyConflict(
            f"idempotency key {existing.idempotency_key!r} was already used for another request "
            f"(message {existing.id}); use a new key for a new message"
        )
    return Accepted(message=existing, replayed=True)


def _enqueue_after_commit(session: AsyncSession, queue: MessageQueue, ids: list[str]) -> None:
    if ids:

        async def enqueue() -> None:
            await queue.enqueue(ids)

        after_commit(session, enqueue)


async def accept(
    session: AsyncSession,
    body: MessageCreate,
    *,
    principal: Principal,
    queue: MessageQueue,
    header_key: str | None,
) -> Accepted:
    key = _idempotency_key(body.idempotency_key, header_key)
    if key:
        existing = (await repository.by_idempotency_keys(session, principal.owner, [key])).get(key)
        if existing is not None:
            return _replay(existing, body.scenario, body)
    spec = await load_spec(session, body.scenario)
    customer = await customers.get(session, body.customer_id)
    now = utcnow()
    prepared = prepare(
        spec, body, customer=customer, owner=principal.owner, idempotency_key=key, now=now
    )
    if not await repository.insert_messages(session, [prepared.message]):
        # A concurrent request with the same key won the unique constraint.
        found = await repository.by_idempotency_keys(session, principal.owner, [key or ""])
        return _replay(found[key or ""], body.scenario, body)
    await repository.add_events(session, prepared.events)
    await repository.add_outbox(session, [prepared.outbox])
    _enqueue_after_commit(session, queue, [prepared.id] if prepared.immediate else [])
    return Accepted(message=prepared, replayed=False)


def _item_error(index: int, exc: AppError) -> BatchItemResult:
    fields = [f.model_dump() for f in exc.fields] if exc.fields else None
    return BatchItemResult(index=index, error=exc.name, detail=exc.detail, fields=fields)


async def accept_batch(
    session: AsyncSession,
    scenario: str,
    raw_items: Sequence[object],
    *,
    principal: Principal,
    queue: MessageQueue,
) -> BatchResult:
    """Validate item by item; write the good ones in bulk; one bad item rejects only itself."""
    spec = await load_spec(session, scenario)
    results: list[BatchItemResult | None] = [None] * len(raw_items)
    items: dict[int, MessageItem] = {}
    for index, raw in enumerate(raw_items):
        try:
            items[index] = MessageItem.model_validate(raw)
        except ValidationError as exc:
            fields = field_errors_from_pydantic(exc.errors())
            results[index] = _item_error(index, ValidationFailed("invalid item", fields=fields))
    keys = [i.idempotency_key for i in items.values() if i.idempotency_key]
    existing = await repository.by_idempotency_keys(session, principal.owner, keys)
    known = await customers.get_many(session, [i.customer_id for i in items.values()])
    now = utcnow()
    fresh: dict[int, Prepared] = {}
    first_of_key: dict[str, int] = {}
    for index, item in items.items():
        try:
            key = item.idempotency_key
            if key and key in existing:
                accepted = _replay(existing[key], scenario, item)
                results[index] = _accepted_result(index, accepted)
                continue
            if key and key in first_of_key:
                results[index] = _duplicate_in_batch(
                    index, fresh[first_of_key[key]], scenario, item
                )
                continue
            prepared = prepare(
                spec,
                item,
                customer=known.get(item.customer_id),
                owner=principal.owner,
                idempotency_key=key,
                now=now,
            )
        except AppError as exc:
            results[index] = _item_error(index, exc)
            continue
        fresh[index] = prepared
        if key:
            first_of_key[key] = index
    await _write_batch(session, scenario, fresh, items, results, principal, queue)
    done = [r for r in results if r is not None]
    accepted_count = sum(1 for r in done if r.id is not None)
    return BatchResult(accepted=accepted_count, rejected=len(done) - accepted_count, items=done)


def _duplicate_in_batch(
    index: int, first: Prepared, scenario: str, item: MessageItem
) -> BatchItemResult:
    if first.message["request_hash"] != request_hash(scenario, item):
        return _item_error(
            index,
            IdempotencyConflict(
                f"idempotency key {item.idempotency_key!r} appears twice in the batch with "
                "different content"
            ),
        )
    return BatchItemResult(index=index, id=first.id, status=first.message["status"], replayed=True)


async def _write_batch(
    session: AsyncSession,
    scenario: str,
    fresh: dict[int, Prepared],
    items: dict[int, MessageItem],
    results: list[BatchItemResult | None],
    principal: Principal,
    queue: MessageQueue,
) -> None:
    inserted = await repository.insert_messages(session, [p.message for p in fresh.values()])
    lost = [i for i, p in fresh.items() if p.id not in inserted]
    if lost:  # concurrent requests took some keys between our check and our insert
        keys = {i: str(fresh[i].message["idempotency_key"]) for i in lost}
        winners = await repository.by_idempotency_keys(
            session, principal.owner, list(keys.values())
        )
        for index in lost:
            try:
                won = _replay(winners[keys[index]], scenario, items[index])
                results[index] = _accepted_result(index, won)
            except AppError as exc:
                results[index] = _item_error(index, exc)
    written = [p for p in fresh.values() if p.id in inserted]
    await repository.add_events(session, [e for p in written for e in p.events])
    await repository.add_outbox(session, [p.outbox for p in written])
    for index, prepared in fresh.items():
        if prepared.id in inserted:
            results[index] = _accepted_result(index, Accepted(message=prepared, replayed=False))
    _enqueue_after_commit(session, queue, [p.id for p in written if p.immediate])


def _accepted_result(index: int, accepted: Accepted) -> BatchItemResult:
    msg = accepted.message
    if isinstance(msg, Prepared):
        return BatchItemResult(index=index, id=msg.id, status=msg.message["status"])
    return BatchItemResult(index=index, id=msg.id, status=MessageStatus(msg.status), replayed=True)


def can_read(principal: Principal, message: Message) -> bool:
    return principal.role != Role.system or message.owner == principal.owner


async def get_message(
    session: AsyncSession, message_id: str, *, principal: Principal
) -> MessageOut:
    message = await repository.by_id(session, message_id)
    if message is None or not can_read(principal, message):
        raise NotFound(f"no message {message_id!r}")
    events = await repository.events_of(session, message_id)
    out = to_out(message)
    out.events = [EventOut(type=e.type, at=e.at, detail=e.detail) for e in events]
    return out


async def list_messages(
    session: AsyncSession,
    *,
    principal: Principal,
    customer_id: str | None,
    scenario: str | None,
    status: MessageStatus | None,
    since: datetime | None,
    before_id: str | None,
    limit: int,
) -> list[MessageOut]:
    rows = await repository.list_page(
        session,
        owner=principal.owner if principal.role == Role.system else None,
        customer_id=customer_id,
        scenario=scenario,
        status=status.value if status else None,
        since=since,
        before_id=before_id,
        limit=limit,
    )
    return [to_out(m) for m in rows]


def to_out(message: Message) -> MessageOut:
    return MessageOut(
        id=message.id,
        status=MessageStatus(message.status),
        status_reason=message.status_reason,
        scenario=message.scenario,
        customer_id=message.customer_id,
        recipient={k: mask_contact(k, v) for k, v in message.recipient.items()},
        channels=message.channels,
        channel=message.channel,
        provider=message.provider,
        provider_message_id=message.provider_message_id,
        content=message.content,
        attempts=message.attempts,
        decision=message.decision,
        send_at=message.send_at,
        created_at=message.created_at,
        updated_at=message.updated_at,
        sent_at=message.sent_at,
        delivered_at=message.delivered_at,
    )
