"""Recording conversions and attributing them to a message or an experiment exposure.

Attribution: with ``message_id``, that message (and its experiment and variant, if the
conversion falls in the experiment's attribution window after the message); without, the
customer's last exposure within the experiment's attribution window before the conversion:
the latest of the customer's experiment messages and experiment assignments (a campaign
holdout gets no message; its exposure is the assignment). An experiment with a
``conversion_event`` only takes conversions of that event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import (
    AppError,
    IdempotencyConflict,
    NotFound,
    ValidationFailed,
    field_errors_from_pydantic,
)
from app.experiments.models import Experiment
from app.ids import new_ids
from app.messages import repository as messages
from app.timeutil import as_utc, utcnow
from app.tracking import repository
from app.tracking.models import Conversion
from app.tracking.schemas import Attribution, ConversionIn, ConversionOut

FUTURE_LEEWAY = timedelta(minutes=5)  # clocks of the bank's systems drift a little


class ConversionRequest(NamedTuple):
    owner: str
    item: ConversionIn
    idempotency_key: str | None


class Recorded(NamedTuple):
    conversion: ConversionOut
    replayed: bool


Outcome = Recorded | AppError


class Exposure(NamedTuple):
    customer_id: str
    at: datetime
    experiment_id: str
    variant: str
    message_id: str | None


@dataclass
class _Lookups:
    """What a group's attribution needs, in a few queries."""

    messages: dict[str, Any] = field(default_factory=dict)
    exposures: dict[str, list[Exposure]] = field(default_factory=dict)  # newest first
    experiments: dict[str, Experiment] = field(default_factory=dict)


def money_text(value: Decimal | None) -> str | None:
    """``Decimal("1200.000000")`` (PostgreSQL's NUMERIC(18, 6)) → "1200.00"; more places kept."""
    if value is None:
        return None
    normal = value.normalize()
    exponent = int(normal.as_tuple().exponent)
    return f"{normal:.2f}" if exponent >= -2 else f"{normal:f}"


def to_out(
    row: Conversion | Mapping[str, Any], experiments: Mapping[str, Experiment]
) -> ConversionOut:
    """The API shape of a stored conversion (a model or the inserted row's dict)."""
    get = row.get if isinstance(row, Mapping) else lambda name: getattr(row, name)
    experiment = experiments.get(get("experiment_id") or "")
    attributed = None
    if get("message_id") or experiment is not None:
        attributed = Attribution(
            message_id=get("message_id"),
            experiment_id=get("experiment_id"),
            experiment=experiment.key if experiment is not None else None,
            variant=get("variant"),
        )
    return ConversionOut(
        id=get("id"),
        customer_id=get("customer_id"),
        event=get("event"),
        value=money_text(get("value")),
        occurred_at=get("occurred_at"),
        attributed=attributed,
    )


def _same_request(existing: Conversion, item: ConversionIn) -> bool:
    """Whether ``item`` repeats the request that made ``existing``. Fields the caller left
    out (occurred_at: now; message_id: found by attribution) match what was stored for them."""
    value = Decimal(item.value) if item.value is not None else None
    return (
        existing.customer_id == item.customer_id
        and existing.event == item.event
        and existing.value == value
        and (item.occurred_at is None or existing.occurred_at == as_utc(item.occurred_at))
        and (item.message_id is None or existing.message_id == item.message_id)
    )


def _occurred(item: ConversionIn, now: datetime) -> datetime:
    if item.occurred_at is None:
        return now
    occurred = as_utc(item.occurred_at)
    if occurred > now + FUTURE_LEEWAY:
        raise ValidationFailed.field("occurred_at", "is in the future; send when it happened")
    return occurred


def _eligible(experiment: Experiment | None, event: str) -> bool:
    return experiment is not None and experiment.conversion_event in (None, event)


def _within(experiment: Experiment, exposed: datetime, occurred: datetime) -> bool:
    """Whether a conversion at ``occurred`` is in the experiment's attribution window of an
    exposure at ``exposed``: not before it, at most ``attribution_hours`` after it."""
    return exposed <= occurred <= exposed + timedelta(hours=experiment.attribution_hours)


def _credited(
    experiment: Experiment | None, event: str, exposed: datetime, occurred: datetime
) -> bool:
    """Whether the experiment takes this conversion: its event, within its window."""
    return (
        experiment is not None
        and _eligible(experiment, event)
        and _within(experiment, as_utc(exposed), occurred)
    )


def _last_exposure(
    exposures: Iterable[Exposure], occurred: datetime, event: str, lookups: _Lookups
) -> Exposure | None:
    """The newest exposure whose experiment takes this event within its window."""
    for exposure in exposures:
        experiment = lookups.experiments.get(exposure.experiment_id)
        if _credited(experiment, event, exposure.at, occurred):
            return exposure
    return None


def _attribute(item: ConversionIn, occurred: datetime, lookups: _Lookups) -> dict[str, Any]:
    """message_id, experiment_id and variant of the conversion row; raises for a bad message."""
    if item.message_id is not None:
        message = lookups.messages.get(item.message_id)
        if message is None:
            raise NotFound(f"no message {item.message_id!r}")
        if message.customer_id != item.customer_id:
            raise ValidationFailed.field("message_id", "belongs to another customer")
        experiment = lookups.experiments.get(message.experiment_id or "")
        # the message is named, but the experiment counts it only within its window (a
        # conversion before the message, or long after it, is not the message's effect)
        if not _credited(experiment, item.event, message.created_at, occurred):
            return {"message_id": message.id, "experiment_id": None, "variant": None}
        return {
            "message_id": message.id,
            "experiment_id": message.experiment_id,
            "variant": message.variant,
        }
    found = _last_exposure(
        lookups.exposures.get(item.customer_id, []), occurred, item.event, lookups
    )
    if found is None:
        return {"message_id": None, "experiment_id": None, "variant": None}
    return {
        "message_id": found.message_id,
        "experiment_id": found.experiment_id,
        "variant": found.variant,
    }


async def record_many(
    session: AsyncSession, requests: Sequence[ConversionRequest]
) -> list[Outcome]:
    """Record a group of conversions; each gets its own outcome (a bad one fails alone)."""
    now = utcnow()
    outcomes: list[Outcome | None] = [None] * len(requests)
    await _answer_taken_keys(session, requests, outcomes)
    repeats = _repeats(requests, outcomes)
    occurred: dict[int, datetime] = {}
    for index, request in enumerate(requests):
        if outcomes[index] is None and index not in repeats:
            try:
                occurred[index] = _occurred(request.item, now)
            except AppError as exc:
                outcomes[index] = exc
    lookups = await _load(session, [(requests[i].item, at) for i, at in occurred.items()])
    rows = _rows(requests, occurred, lookups, outcomes, now)
    inserted = await repository.add_conversions(session, list(rows.values()))
    for index, row in rows.items():
        if row["id"] in inserted:
            outcomes[index] = Recorded(to_out(row, lookups.experiments), replayed=False)
    await _converted_events(session, [row for row in rows.values() if row["id"] in inserted])
    await _answer_taken_keys(session, requests, outcomes)  # keys a concurrent request took
    for index, first in repeats.items():
        outcomes[index] = _repeat(requests[index], requests[first], outcomes[first])
    return [o if o is not None else AppError("the conversion was not recorded") for o in outcomes]


def _rows(
    requests: Sequence[ConversionRequest],
    occurred: Mapping[int, datetime],
    lookups: _Lookups,
    outcomes: list[Outcome | None],
    now: datetime,
) -> dict[int, dict[str, Any]]:
    ids = iter(new_ids("cnv", len(occurred)))
    rows: dict[int, dict[str, Any]] = {}
    for index, at in occurred.items():
        request = requests[index]
        try:
            attribution = _attribute(request.item, at, lookups)
        except AppError as exc:
            outcomes[index] = exc
            continue
        item = request.item
        rows[index] = {
            "id": next(ids),
            "owner": request.owner,
            "idempotency_key": request.idempotency_key,
            "customer_id": item.customer_id,
            "event": item.event,
            "value": Decimal(item.value) if item.value is not None else None,
            "occurred_at": at,
            "created_at": now,
            **attribution,
        }
    return rows


def _repeats(
    requests: Sequence[ConversionRequest], outcomes: list[Outcome | None]
) -> dict[int, int]:
    """index -> index of the first open request of the group with the same key."""
    first: dict[tuple[str, str], int] = {}
    repeats: dict[int, int] = {}
    for index, request in enumerate(requests):
        if request.idempotency_key is None or outcomes[index] is not None:
            continue
        key = (request.owner, request.idempotency_key)
        if key in first:
            repeats[index] = first[key]
        else:
            first[key] = index
    return repeats


def _repeat(
    request: ConversionRequest, first: ConversionRequest, outcome: Outcome | None
) -> Outcome:
    if not isinstance(outcome, Recorded):
        return outcome if outcome is not None else AppError("the conversion was not recorded")
    if request.item != first.item:
        return _conflict(request.idempotency_key, outcome.conversion.id)
    return Recorded(outcome.conversion, replayed=True)


def _conflict(key: str | None, conversion_id: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key {key!r} was already used for another conversion ({conversion_id}); "
        "use a new key for a new conversion"
    )


async def _answer_taken_keys(
    session: AsyncSession, requests: Sequence[ConversionRequest], outcomes: list[Outcome | None]
) -> None:
    """Open requests whose key is taken: a replay of that conversion, or a conflict."""
    pending = [i for i, o in enumerate(outcomes) if o is None and requests[i].idempotency_key]
    for owner in {requests[i].owner for i in pending}:
        mine = [i for i in pending if requests[i].owner == owner]
        keys = [str(requests[i].idempotency_key) for i in mine]
        found = await repository.conversions_by_keys(session, owner, keys)
        experiments = await repository.experiments_by_ids(
            session, [c.experiment_id for c in found.values() if c.experiment_id]
        )
        for i in mine:
            existing = found.get(str(requests[i].idempotency_key))
            if existing is None:
                continue
            if _same_request(existing, requests[i].item):
                outcomes[i] = Recorded(to_out(existing, experiments), replayed=True)
            else:
                outcomes[i] = _conflict(existing.idempotency_key, existing.id)


async def _load(session: AsyncSession, items: Sequence[tuple[ConversionIn, datetime]]) -> _Lookups:
    """Messages named, exposures of the others and the experiments of both: a few queries."""
    lookups = _Lookups()
    named = [item.message_id for item, _ in items if item.message_id is not None]
    lookups.messages = await repository.messages_by_ids(session, named)
    unnamed = [(item, at) for item, at in items if item.message_id is None]
    hours = await repository.max_attribution_hours(session) if unnamed else 0
    if hours:
        since = min(at for _, at in unnamed) - timedelta(hours=hours)
        until = max(at for _, at in unnamed)
        customers = [item.customer_id for item, _ in unnamed]
        for row in await repository.exposures(session, customers, since, until):
            lookups.exposures.setdefault(row.customer_id, []).append(Exposure(*row))
        for found in lookups.exposures.values():
            # newest first; at a tie the message, which names more than the assignment
            found.sort(key=lambda e: (e.at, e.message_id is not None), reverse=True)
    experiment_ids = [m.experiment_id for m in lookups.messages.values() if m.experiment_id]
    experiment_ids += [e.experiment_id for f in lookups.exposures.values() for e in f]
    lookups.experiments = await repository.experiments_by_ids(session, experiment_ids)
    return lookups


async def _converted_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """A "converted" step on the timeline of each message a conversion is credited to."""
    await messages.add_events(
        session,
        [
            {
                "message_id": row["message_id"],
                "type": "converted",
                "at": row["occurred_at"],
                "detail": {
                    "conversion_id": row["id"],
                    "event": row["event"],
                    "value": money_text(row["value"]),
                },
            }
            for row in rows
            if row["message_id"] is not None
        ],
    )


def parse_items(
    raw_items: Sequence[object], *, owner: str, batch_key: str | None
) -> tuple[list[ConversionRequest], list[int], dict[int, AppError]]:
    """Validate raw batch items one by one: (requests, their item indexes, errors by index).
    With a batch ``Idempotency-Key``, item ``i`` gets ``<key>:<i>``, so a retry replays."""
    requests: list[ConversionRequest] = []
    positions: list[int] = []
    errors: dict[int, AppError] = {}
    for index, raw in enumerate(raw_items):
        try:
            item = ConversionIn.model_validate(raw)
        except ValidationError as exc:
            fields = field_errors_from_pydantic(exc.errors(), root="item")
            errors[index] = ValidationFailed("invalid item", fields=fields)
            continue
        positions.append(index)
        requests.append(
            ConversionRequest(owner, item, f"{batch_key}:{index}" if batch_key else None)
        )
    return requests, positions, errors


async def list_page(
    session: AsyncSession,
    *,
    customer_id: str | None,
    experiment: str | None,
    before_id: str | None,
    limit: int,
) -> list[ConversionOut]:
    """Conversions, newest first; ``experiment`` by key or id."""
    experiment_id = None
    if experiment is not None:
        found = await repository.experiment_by_key_or_id(session, experiment)
        if found is None:
            raise NotFound(f"no experiment {experiment!r}")
        experiment_id = found.id
    rows = await repository.list_conversions(
        session,
        customer_id=customer_id,
        experiment_id=experiment_id,
        before_id=before_id,
        limit=limit,
    )
    experiments = await repository.experiments_by_ids(
        session, [r.experiment_id for r in rows if r.experiment_id]
    )
    return [to_out(row, experiments) for row in rows]
