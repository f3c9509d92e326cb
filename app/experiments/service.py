"""Experiments: storage with reference checks, the frozen configuration of a started
experiment, and the lifecycle draft -> running -> stopped -> completed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import after_commit
from app.errors import Conflict, NotFound, ValidationFailed
from app.experiments import repository
from app.experiments.models import Experiment
from app.experiments.schemas import (
    LIVE_FIELDS,
    CompleteIn,
    ExperimentIn,
    ExperimentKind,
    ExperimentOut,
    ExperimentStatus,
    ExperimentUpdate,
    VariantIn,
)
from app.ids import new_id
from app.strategies import repository as strategies
from app.timeutil import utcnow
from templates import repository as templates

Status = ExperimentStatus
NULLABLE = frozenset(
    {"name", "description", "strategy", "control", "sample_size", "conversion_event"}
)


async def get(session: AsyncSession, ref: str) -> Experiment:
    """The experiment with key (or id) ``ref``; 404 otherwise."""
    found = await repository.by_key(session, ref)
    if found is None and ref.startswith("exp_"):
        found = await repository.by_id(session, ref)
    if found is None:
        raise NotFound(f"no experiment {ref!r}")
    return found


async def create(session: AsyncSession, data: ExperimentIn) -> Experiment:
    """A draft experiment; 422 naming the field for a bad or unknown reference."""
    if await repository.by_key(session, data.key) is not None:
        raise Conflict(f"experiment {data.key!r} exists; PATCH /v1/experiments/{data.key}")
    now = utcnow()
    row = Experiment(id=new_id("exp"), key=data.key, status=Status.draft, created_at=now)
    fields = data.model_dump(mode="json", exclude={"key"})
    fields["salt"] = data.salt or data.key
    _assign(row, fields)
    await _check(session, row)
    session.add(row)
    await session.flush()
    changed_on_commit(session)
    return row


async def update(session: AsyncSession, ref: str, data: ExperimentUpdate) -> Experiment:
    """Change the fields given. A started experiment keeps its sample and variants frozen
    (changing them would move customers between arms mid-test): 409."""
    row = await get(session, ref)
    fields = data.model_dump(mode="json", exclude_unset=True)
    if data.variants is not None:  # every key of each variant, as create stores them
        fields["variants"] = [v.model_dump(mode="json") for v in data.variants]
    # a field sent back unchanged (a read-modify-write client) is no change
    frozen = sorted(n for n in set(fields) - LIVE_FIELDS if fields[n] != getattr(row, n))
    if row.status != Status.draft and frozen:
        raise Conflict(
            f"experiment {row.key!r} is {row.status}: {', '.join(frozen)} can no longer change "
            f"(only {', '.join(sorted(LIVE_FIELDS))}); create a new experiment instead"
        )
    if row.status != Status.draft:  # the others are unchanged: keep them as stored
        fields = {n: v for n, v in fields.items() if n in LIVE_FIELDS}
    for name, value in fields.items():
        if value is None and name not in NULLABLE:
            raise ValidationFailed.field(name, "may not be null; leave it out to keep it")
    _assign(row, fields)
    if row.status == Status.draft:
        await _check(session, row)
    row.updated_at = utcnow()
    await session.flush()
    changed_on_commit(session)
    return row


async def delete(session: AsyncSession, ref: str) -> None:
    row = await get(session, ref)
    if row.status != Status.draft:
        raise Conflict(f"experiment {row.key!r} is {row.status}; only a draft can be deleted")
    await session.delete(row)
    changed_on_commit(session)


def _assign(row: Experiment, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        setattr(row, name, value)
    if "variants" in fields and "control" not in fields:
        row.control = None  # type: ignore[assignment]  # defaulted again by _check
    row.updated_at = utcnow()


# -- checks -------------------------------------------------------------------------------


async def _check(session: AsyncSession, row: Experiment) -> None:
    """The whole configuration, as it would be stored: 422 naming the field."""
    variants = [VariantIn.model_validate(v) for v in row.variants]
    kind = ExperimentKind(row.kind)
    _check_variants(kind, variants)
    row.control = _control(variants, row.control)
    if await strategies.segment(session, row.segment) is None:
        raise ValidationFailed.field("segment", f"no segment {row.segment!r}")
    await _check_strategy(session, kind, row)
    await _check_templates(session, kind, variants)


def _check_variants(kind: ExperimentKind, variants: list[VariantIn]) -> None:
    seen: set[str] = set()
    holdouts = 0
    for i, v in enumerate(variants):
        if v.key in seen:
            raise ValidationFailed.field(f"variants.{i}.key", f"{v.key!r} is used twice")
        seen.add(v.key)
        holdouts += v.holdout
        if holdouts > 1:
            raise ValidationFailed.field(f"variants.{i}.holdout", "at most one holdout")
        if v.holdout:
            continue
        if kind == ExperimentKind.campaign and v.channel is None:
            raise ValidationFailed.field(f"variants.{i}.channel", "a campaign variant needs one")
        if v.template is None:
            what = "its patch template" if kind == ExperimentKind.patch else "its content"
            raise ValidationFailed.field(f"variants.{i}.template", f"required: {what}")


def _control(variants: list[VariantIn], control: str | None) -> str:
    keys = [v.key for v in variants]
    if control is None:
        return next((v.key for v in variants if v.holdout), keys[0])
    if control not in keys:
        raise ValidationFailed.field("control", f"{control!r} is not one of {', '.join(keys)}")
    return control


async def _check_strategy(session: AsyncSession, kind: ExperimentKind, row: Experiment) -> None:
    if kind == ExperimentKind.campaign:
        if row.strategy is not None:
            raise ValidationFailed.field("strategy", "a campaign experiment has no strategy")
        return
    if row.strategy is None:
        raise ValidationFailed.field("strategy", "a patch experiment splits a strategy: name it")
    strategy = await strategies.strategy(session, row.strategy)
    if strategy is None:
        raise ValidationFailed.field("strategy", f"no strategy {row.strategy!r}")
    if strategy.segment != row.segment:
        raise ValidationFailed.field(
            "strategy",
            f"strategy {row.strategy!r} targets segment {strategy.segment!r}, not "
            f"{row.segment!r}: the experiment splits that strategy's customers, so use its "
            "segment",
        )


async def _check_templates(
    session: AsyncSession, kind: ExperimentKind, variants: list[VariantIn]
) -> None:
    found = await templates.by_keys(session, [v.template for v in variants if v.template])
    for i, v in enumerate(variants):
        if v.template is None:
            continue
        where = f"variants.{i}.template"
        template = found.get(v.template)
        if template is None:
            raise ValidationFailed.field(where, f"no template {v.template!r}")
        if v.channel is not None and template.channel != v.channel.value:
            raise ValidationFailed.field(where, f"{v.template!r} is a {template.channel} template")
        if kind == ExperimentKind.patch and template.current_version is None:
            raise ValidationFailed.field(where, f"{v.template!r} has no published version yet")


# -- lifecycle ----------------------------------------------------------------------------


def _require(row: Experiment, *allowed: Status, action: str) -> None:
    if row.status not in allowed:
        raise Conflict(
            f"experiment {row.key!r} is {row.status}; only a "
            f"{' or '.join(allowed)} experiment can be {action}"
        )


async def start(session: AsyncSession, ref: str) -> Experiment:
    """draft -> running. A strategy's traffic is split by one experiment at a time."""
    row = await get(session, ref)
    _require(row, Status.draft, action="started")
    if row.kind == ExperimentKind.patch and row.strategy is not None:
        others = await repository.running_of_strategy(session, row.strategy, other_than=row.id)
        if others:
            raise Conflict(
                f"experiment {others[0]!r} already splits strategy {row.strategy!r}; "
                "stop or complete it first"
            )
    await _check(session, row)  # a template may have been unpublished since
    row.status, row.started_at = Status.running, utcnow()
    return await _saved(session, row)


async def stop(session: AsyncSession, ref: str) -> Experiment:
    """running -> stopped: no new assignments; sends go back to the strategy's patch."""
    row = await get(session, ref)
    _require(row, Status.running, action="stopped")
    row.status, row.stopped_at = Status.stopped, utcnow()
    return await _saved(session, row)


async def complete(session: AsyncSession, ref: str, data: CompleteIn) -> Experiment:
    """running | stopped -> completed, with an optional manual winner everyone then gets."""
    row = await get(session, ref)
    _require(row, Status.running, Status.stopped, action="completed")
    now = utcnow()
    if data.winner is not None:
        keys = [v["key"] for v in row.variants]
        if data.winner not in keys:
            raise ValidationFailed.field(
                "winner", f"{data.winner!r} is not one of {', '.join(keys)}"
            )
        row.winner = data.winner
        row.winner_decision = {"by": "analyst", "variant": data.winner, "at": now.isoformat()}
    row.status, row.completed_at = Status.completed, now
    return await _saved(session, row)


async def _saved(session: AsyncSession, row: Experiment) -> Experiment:
    row.updated_at = utcnow()
    await session.flush()
    changed_on_commit(session)
    return row


# -- change notification --------------------------------------------------------------------

_listeners: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` after an experiment change commits in this process (send-time caches
    drop at once; other processes see the change within their cache time)."""
    _listeners.append(listener)


def changed() -> None:
    """Tell this process's listeners that experiments changed (call after the commit)."""
    for listener in _listeners:
        listener()


def changed_on_commit(session: AsyncSession) -> None:
    """Call :func:`changed` once the session commits through ``app.db.commit``."""

    async def hook() -> None:
        changed()

    after_commit(session, hook)


def to_out(row: Experiment) -> ExperimentOut:
    return ExperimentOut.model_validate(row, from_attributes=True)
