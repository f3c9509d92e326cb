"""Accepting messages (single and batch) and reading them back."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import Principal
from app.customers import repository as customers
from app.customers.models import CustomerView
from app.db import after_commit
from app.errors import (
    AppError,
    Conflict,
    IdempotencyConflict,
    ValidationFailed,
    field_errors_from_pydantic,
)
from app.experiments import patching as experiments
from app.ids import new_ids
from app.messages import repository
from app.messages.compose import Composer, Prepared, request_hash
from app.messages.gcpause import collector_paused
from app.messages.models import Message
from app.messages.schemas import (
    MessageItem,
)
from app.queue.base import MessageQueue
from app.scenarios.service import load_spec
from app.settings import Settings
from app.strategies import patching
from app.timeutil import utcnow
from app.tracking.links import TrackedHosts
from app.tracking.service import Tracker

log = logging.getLogger("icc.messages")


class Accepted(NamedTuple):  # a tuple: one is made for every message of a batch
    message: Message | Prepared
    replayed: bool

    @property
    def id(self) -> str:
        return self.message.id


class Origin(NamedTuple):
    """Where a campaign's message comes from: kept on the message for reports."""

    campaign_id: str | None = None
    experiment_id: str | None = None
    variant: str | None = None


class AcceptRequest(NamedTuple):
    """One message to accept, as the API received it (idempotency key already resolved).
    Campaigns also give ``templates`` (channel -> template key replacing the scenario's
    content there, sorted pairs) and the message's ``origin``."""

    scenario: str
    owner: str
    item: MessageItem
    idempotency_key: str | None
    templates: tuple[tuple[str, str], ...] = ()
    origin: Origin = Origin()

    @property
    def spec_key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.scenario, self.templates


AcceptOutcome = Accepted | AppError


def resolve_idempotency_key(body_key: str | None, header_key: str | None) -> str | None:
    if body_key and header_key and body_key != header_key:
        raise ValidationFailed.field(
            "idempotency_key",
            "differs from the Idempotency-Key header; send one or make them equal",
        )
    return body_key or header_key


def _replay(existing: Message, request: AcceptRequest) -> AcceptOutcome:
    if existing.request_hash not in _hashes(request):
        return IdempotencyConflict(
            f"idempotency key {existing.idempotency_key!r} was already used for another request "
            f"(message {existing.id}); use a new key for a new message"
        )
    return Accepted(message=existing, replayed=True)


def _hashes(request: AcceptRequest) -> tuple[str, ...]:
    """The request's fingerprints: as made now, and as made before send_at was hashed in UTC."""
    current = request_hash(request.scenario, request.item)
    send_at = request.item.send_at
    if send_at is None or not send_at.utcoffset():
        return (current,)
    return current, request_hash(request.scenario, request.item, as_sent=True)


class _Plan:
    """Everything looked up for a group of requests, in a few queries."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.patcher = patching.Patcher(settings)
        self.tracker = Tracker(settings.tracking)
        self.specs: dict[tuple[str, tuple[tuple[str, str], ...]], Composer | AppError] = {}
        self.ids: list[str] = []
        self.done = False  # every request decided
        self.customers: dict[str, CustomerView] = {}
        self.fresh: dict[int, Prepared] = {}
        self.first_of_key: dict[tuple[str, str], int] = {}
        self.repeats: dict[int, int] = {}  # index -> index of the first request with its key
        self.erasing: set[str] = set()  # customers whose erasure is under way

    async def load(
        self, session: AsyncSession, requests: Sequence[AcceptRequest], *, held: bool = False
    ) -> None:
        customer_ids = [r.item.customer_id for r in requests]
        # before reading them: an erasure of one of these customers waits for this group,
        # and the customers being erased now get nothing (``held``: the caller did so)
        if not held:
            self.erasing = await customers.hold_customers(session, customer_ids)
        for key in {r.spec_key for r in requests}:
            try:
                self.specs[key] = Composer(await load_spec(session, key[0], overrides=dict(key[1])))
            except AppError as exc:
                self.specs[key] = exc
        self.customers = await customers.get_many(session, customer_ids)
        ready = list({k[0] for k, c in self.specs.items() if not isinstance(c, AppError)})
        now = utcnow()
        self.patcher = await patching.load(
            session,
            scenarios=ready,
            customer_ids=customer_ids,
            settings=self.settings,
            now=now,
            phones={p for r in requests if (p := self._sms_phone(r.item)) is not None},
            times={max(now, r.item.send_at or now) for r in requests},
            # read only when the group's scenarios have caps: no list made otherwise
            sending=((r.scenario, r.item.customer_id) for r in requests),
        )
        self.patcher.experiments = await experiments.load(
            session, self.patcher.scenarios, customer_ids, sending=True
        )
        self._track_only_written_hosts()

    def _track_only_written_hosts(self) -> None:
        """Track only links to hosts the group's templates write out (or configured): one
        that came in through a variable would redirect from the bank's domain to anywhere."""
        written = [c.link_hosts for c in self.specs.values() if not isinstance(c, AppError)]
        hosts = TrackedHosts(
            frozenset().union(*written, self.patcher.link_hosts()),
            tuple(self.settings.tracking.allowed_domains),
        )
        self.tracker.hosts = hosts
        self.patcher.track_only(hosts)

    def _sms_phone(self, item: MessageItem) -> str | None:
        """The number a request's SMS would go to: its recipient's, else the customer's."""
        phone = item.recipient.phone if item.recipient is not None else None
        if not phone and (customer := self.customers.get(item.customer_id)) is not None:
            phone = customer.phone
        return phone or None

    def messages(
        self,
        requests: Sequence[AcceptRequest],
        now: datetime,
        outcomes: list[AcceptOutcome | None],
    ) -> Iterator[dict[str, Any]]:
        """Decide every request (into ``outcomes``) and yield the message rows to insert."""
        for index, request in enumerate(requests):
            outcome = outcomes[index] = self.decide(index, request, now)
            if outcome is None and index in self.fresh:
                yield self.fresh[index].message
        self.done = True

    def decide(self, index: int, request: AcceptRequest, now: datetime) -> AcceptOutcome | None:
        """An outcome now (an error), or None: prepared to insert, or a repeat of an earlier
        key in the group, answered once the first one's fate is known."""
        composer = self.specs[request.spec_key]
        if isinstance(composer, AppError):
            return composer
        key = (request.owner, request.idempotency_key or "")
        if request.idempotency_key and key in self.first_of_key:
            self.repeats[index] = self.first_of_key[key]
            return None
        if request.item.customer_id in self.erasing:
            if request.idempotency_key:
                self.first_of_key[key] = index
            return Conflict(
                f"customer {request.item.customer_id!r} is being erased; send again once "
                "the erasure is done"
            )
        try:
            self.fresh[index] = composer.prepare(
                request.item,
                customer=self.customers.get(request.item.customer_id),
                owner=request.owner,
                idempotency_key=request.idempotency_key,
                now=now,
                message_id=self.ids[index],
                consent=self.patcher.consent(
                    request.item.customer_id,
                    phone=self._sms_phone(request.item),
                    customer=self.customers.get(request.item.customer_id),
                ),
            )
        except AppError as exc:
            if request.idempotency_key:
                self.first_of_key[key] = index
            return exc
        except Exception as exc:  # a bug must fail this message only, not its whole group
            log.exception("could not prepare a message")
            failure = ValidationFailed(f"the message could not be prepared ({type(exc).__name__})")
            if request.idempotency_key:
                self.first_of_key[key] = index
            return failure
        if request.idempotency_key:
            self.first_of_key[key] = index
        # every row gets the columns (None for API sends): a bulk insert needs one shape
        self.fresh[index].message.update(request.origin._asdict())
        self._patch(self.fresh[index].message, request, now)
        self.tracker.track(self.fresh[index].message)
        return None

    def _patch(self, message: dict[str, Any], request: AcceptRequest, now: datetime) -> None:
        """The marketing patch; never a reason to refuse the transactional message."""
        try:
            self.patcher.apply(
                message,
                customer=self.customers.get(request.item.customer_id),
                inline_profile=request.item.profile,
                now=now,
            )
        except Exception:
            log.exception("the patch decision failed; the message goes without a patch")
            message["decision"]["patch"] = {"error": "the patch decision failed"}


async def accept_many(
    session: AsyncSession,
    requests: Sequence[AcceptRequest],
    *,
    queue: MessageQueue,
    settings: Settings | None = None,
    held: bool = False,
) -> list[AcceptOutcome]:
    """Accept a group of messages with a few bulk statements; each gets its own outcome.
    Serves both the batch endpoint and coalesced single sends. Ids are enqueued after commit.
    ``held``: the caller holds the customers' erasure buckets in this transaction
    (customers.hold_customers) and left out those being erased (the campaign runner).

    Idempotency rests on the unique (owner, idempotency_key) constraint: the insert skips
    taken keys, and only those (and failed requests that carry a key) are looked up, so a
    fresh group costs no lookup at all."""
    plan = _Plan(settings if settings is not None else Settings())
    await plan.load(session, requests, held=held)
    now = utcnow()
    # after `now`: an id's time is never before its message's created_at, which the
    # message list's `since` relies on (repository.list_page)
    plan.ids = new_ids("msg", len(requests))
    outcomes: list[AcceptOutcome | None] = [None] * len(requests)
    # Lazily: on PostgreSQL the first messages are on their way while later ones are prepared
    rows = plan.messages(requests, now, outcomes)
    inserted = await repository.insert_messages(session, rows, expected=len(requests))
    assert plan.done, "insert_messages takes every row"
    written = [p for p in plan.fresh.values() if p.id in inserted]
    await experiments.record(session, plan.patcher.experiments, [p.message for p in written])
    await repository.add_outbox(session, [p.outbox for p in written])
    await plan.tracker.write(session, inserted)
    _enqueue_after_commit(session, queue, [p.id for p in written if p.immediate])
    for index, prepared in plan.fresh.items():
        if prepared.id in inserted:
            outcomes[index] = Accepted(message=prepared, replayed=False)
    await _answer_taken_keys(session, requests, outcomes)
    for index, first in plan.repeats.items():  # the first of its key failed: so does it
        if outcomes[index] is None:
            outcomes[index] = outcomes[first]
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


async def _answer_taken_keys(
    session: AsyncSession, requests: Sequence[AcceptRequest], outcomes: list[AcceptOutcome | None]
) -> None:
    """Requests whose key is already taken get the first message (a replay) or a conflict,
    also when they would no longer validate (a replay after the scenario changed)."""
    pending = [
        i
        for i, o in enumerate(outcomes)
        if (o is None or isinstance(o, AppError)) and requests[i].idempotency_key
    ]
    for owner in {requests[i].owner for i in pending}:
        mine = [i for i in pending if requests[i].owner == owner]
        keys = [str(requests[i].idempotency_key) for i in mine]
        found = await repository.by_idempotency_keys(session, owner, keys)
        for i in mine:
            winner = found.get(str(requests[i].idempotency_key))
            if winner is not None:
                outcomes[i] = _replay(winner, requests[i])


def _enqueue_after_commit(session: AsyncSession, queue: MessageQueue, ids: list[str]) -> None:
    if ids:

        async def enqueue() -> None:
            await queue.enqueue(ids)

        after_commit(session, enqueue)


def batch_requests(
    scenario: str, raw_items: Sequence[object], *, owner: str, batch_key: str | None
) -> tuple[list[AcceptRequest], list[int], dict[int, AppError]]:
    """Validate raw batch items one by one: (requests, the item index of each request, errors
    by item index). With a batch ``Idempotency-Key``, an item without its own key gets
    ``<key>:<index>``, so a retried batch replays instead of sending twice."""
    requests: list[AcceptRequest] = []
    positions: list[int] = []
    errors: dict[int, AppError] = {}
    validate = MessageItem.__pydantic_validator__.validate_python  # model_validate, minus a layer
    for index, raw in enumerate(raw_items):
        try:
            item: MessageItem = validate(raw)
        except ValidationError as exc:
            fields = field_errors_from_pydantic(exc.errors(), root="item")
            errors[index] = ValidationFailed("invalid item", fields=fields)
            continue
        positions.append(index)
        key = item.idempotency_key or (f"{batch_key}:{index}" if batch_key else None)
        requests.append(AcceptRequest(scenario, owner, item, key))
    return requests, positions, errors


@dataclass(frozen=True)
class BatchAnswer:
    """The batch endpoint's answer in the shape of :class:`BatchResult`, kept as plain data:
    10,000 pydantic results cost more to build and serialize than the rest of the answer."""

    accepted: int
    rejected: int
    items: list[dict[str, Any]]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"accepted": self.accepted, "rejected": self.rejected, "items": self.items}
        )


async def accept_batch(
    session: AsyncSession,
    scenario: str,
    raw_items: Sequence[object],
    *,
    principal: Principal,
    queue: MessageQueue,
    batch_key: str | None = None,
    settings: Settings | None = None,
) -> BatchAnswer:
    """Validate item by item; write the good ones in bulk; one bad item rejects only itself."""
    await load_spec(session, scenario)  # an unknown scenario fails the whole batch: 404
    with collector_paused():  # resumed when only the answer is left of the batch
        return await _answer_batch(
            session, scenario, raw_items, principal.owner, queue, batch_key, settings
        )


async def _answer_batch(
    session: AsyncSession,
    scenario: str,
    raw_items: Sequence[object],
    owner: str,
    queue: MessageQueue,
    batch_key: str | None,
    settings: Settings | None,
) -> BatchAnswer:
    requests, positions, errors = batch_requests(
        scenario, raw_items, owner=owner, batch_key=batch_key
    )
    outcomes = await accept_many(session, requests, queue=queue, settings=settings)
    items: list[dict[str, Any]] = [{}] * len(raw_items)
    for index, error in errors.items():
        items[index] = _item_error(index, error)
    for index, outcome in zip(positions, outcomes, strict=True):
        if isinstance(outcome, AppError):
            errors[index] = outcome
            items[index] = _item_error(index, outcome)
        else:
            items[index] = _accepted_item(index, outcome)
    return BatchAnswer(accepted=len(items) - len(errors), rejected=len(errors), items=items)


def _item_error(index: int, exc: AppError) -> dict[str, Any]:
    fields = [f.model_dump() for f in exc.fields] if exc.fields else None
    return _item(index, None, None, False, exc.name, exc.detail, fields)


def _accepted_item(index: int, accepted: Accepted) -> dict[str, Any]:
    msg = accepted.message
    status = msg.message["status"] if isinstance(msg, Prepared) else msg.status
    return _item(index, msg.id, status, accepted.replayed, None, None, None)


def _item(
    index: int,
    message_id: str | None,
    status: str | None,
    replayed: bool,
    error: str | None,
    detail: str | None,
    fields: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """One BatchItemResult, every field in its order, as pydantic would serialize it."""
    return {
        "index": index,
        "id": message_id,
        "status": status,
        "replayed": replayed,
        "error": error,
        "detail": detail,
        "fields": fields,
    }
