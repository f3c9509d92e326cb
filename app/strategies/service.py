"""Segments and strategies: storage with reference checks, and the strategies of a scenario
compiled for `strategies.decide.decide()`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import time
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.customers import service as customers
from app.db import after_commit
from app.errors import AppError, Conflict, NotFound, ValidationFailed
from app.ids import new_id
from app.scenarios import service as scenarios
from app.strategies import repository
from app.strategies.models import Segment, Strategy
from app.strategies.schemas import (
    FrequencyCapIn,
    HoursIn,
    SegmentIn,
    SegmentOut,
    SegmentUpdate,
    StrategyBase,
    StrategyIn,
    StrategyOut,
)
from app.timeutil import utcnow
from strategies import decide
from strategies.attributes import AttributeSchema
from strategies.predicate import compile_predicate
from strategies.rules import Rule, fields_of, to_json, validate
from templates import service as templates

log = logging.getLogger("icc.strategies")

# `tags` is a column of its own on customers; rules read it like a declared string list
TAGS = "tags"


async def attribute_schema(session: AsyncSession) -> AttributeSchema:
    declared = await customers.attribute_schema(session)
    return AttributeSchema({**{k: v.value for k, v in declared.items()}, TAGS: "string_list"})


async def checked_rule(session: AsyncSession, raw: Any) -> Rule:
    """The rule validated against the current attribute schema (422 naming the field)."""
    return validate(raw, await attribute_schema(session))


# -- segments ---------------------------------------------------------------------------


async def get_segment(session: AsyncSession, key: str) -> Segment:
    found = await repository.segment(session, key)
    if found is None:
        raise NotFound(f"no segment {key!r}")
    return found


async def create_segment(session: AsyncSession, data: SegmentIn) -> Segment:
    if await repository.segment(session, data.key) is not None:
        raise Conflict(f"segment {data.key!r} exists; PUT /v1/segments/{data.key} replaces it")
    rule = await checked_rule(session, data.rule)
    now = utcnow()
    row = Segment(
        id=new_id("seg"),
        key=data.key,
        name=data.name,
        description=data.description,
        rule=to_json(rule),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def replace_segment(session: AsyncSession, key: str, data: SegmentUpdate) -> Segment:
    row = await get_segment(session, key)
    rule = await checked_rule(session, data.rule)
    row.name, row.description, row.rule = data.name, data.description, to_json(rule)
    row.updated_at = utcnow()
    await session.flush()
    _changed_on_commit(session)
    return row


async def delete_segment(session: AsyncSession, key: str) -> None:
    row = await get_segment(session, key)
    users = await repository.strategies_using_segment(session, key)
    if users:
        raise Conflict(f"segment {key!r} is used by strategies {', '.join(users)}; change them")
    _refuse_in_use(
        f"segment {key!r}",
        experiments=await repository.experiments_using(session, segment=key),
        campaigns=await repository.campaigns_using_segment(session, key),
    )
    await session.delete(row)


def _refuse_in_use(what: str, *, experiments: Sequence[str], campaigns: Sequence[str] = ()) -> None:
    """409 while experiments or campaigns that still act on sends use it."""
    users = [f"experiments {', '.join(experiments)}"] if experiments else []
    users += [f"campaigns {', '.join(campaigns)}"] if campaigns else []
    if users:
        raise Conflict(f"{what} is used by {' and '.join(users)}; stop or complete them first")


async def segment_rule(session: AsyncSession, key: str) -> Rule:
    return await checked_rule(session, (await get_segment(session, key)).rule)


def segment_out(row: Segment, rule: Rule | None = None) -> SegmentOut:
    fields: list[str] = sorted(fields_of(rule)) if rule is not None else []
    return SegmentOut(
        id=row.id,
        key=row.key,
        name=row.name,
        description=row.description,
        rule=row.rule,
        fields=fields,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def segment_out_checked(session: AsyncSession, row: Segment) -> SegmentOut:
    try:
        rule = await checked_rule(session, row.rule)
    except AppError:  # the schema changed under it: still show it
        rule = None
    return segment_out(row, rule)


# -- strategies -------------------------------------------------------------------------


async def get_strategy(session: AsyncSession, key: str) -> Strategy:
    found = await repository.strategy(session, key)
    if found is None:
        raise NotFound(f"no strategy {key!r}")
    return found


async def _check_references(session: AsyncSession, data: StrategyBase) -> None:
    try:
        await scenarios.get(session, data.scenario)
    except NotFound:
        raise ValidationFailed.field("scenario", f"no scenario {data.scenario!r}") from None
    if await repository.segment(session, data.segment) is None:
        raise ValidationFailed.field("segment", f"no segment {data.segment!r}")
    for channel, key in data.patch_templates.items():
        where = f"patch_templates.{channel.value}"
        try:
            template = await templates.get(session, key)
        except NotFound:
            raise ValidationFailed.field(where, f"no template {key!r}") from None
        if template.channel != channel.value:
            raise ValidationFailed.field(where, f"{key!r} is a {template.channel} template")
        if template.current_version is None:
            raise ValidationFailed.field(where, f"{key!r} has no published version yet")


def _apply(row: Strategy, data: StrategyBase) -> None:
    row.name = data.name
    row.scenario, row.segment = data.scenario, data.segment
    row.patch_templates = {c.value: k for c, k in data.patch_templates.items()}
    row.priority, row.status = data.priority, data.status.value
    row.starts_at, row.ends_at = data.starts_at, data.ends_at
    row.hours = data.hours.model_dump() if data.hours else None
    row.channels = [c.value for c in data.channels] if data.channels else None
    cap = data.frequency_cap
    row.cap_max, row.cap_days = (cap.max_patches, cap.days) if cap else (None, None)
    row.updated_at = utcnow()


async def create_strategy(session: AsyncSession, data: StrategyIn) -> Strategy:
    if await repository.strategy(session, data.key) is not None:
        raise Conflict(f"strategy {data.key!r} exists; PUT /v1/strategies/{data.key} replaces it")
    await _check_references(session, data)
    row = Strategy(id=new_id("stg"), key=data.key, created_at=utcnow())
    _apply(row, data)
    session.add(row)
    await session.flush()
    _changed_on_commit(session)
    return row


async def replace_strategy(session: AsyncSession, key: str, data: StrategyBase) -> Strategy:
    row = await get_strategy(session, key)
    await _check_references(session, data)
    _apply(row, data)
    await session.flush()
    _changed_on_commit(session)
    return row


async def delete_strategy(session: AsyncSession, key: str) -> None:
    row = await get_strategy(session, key)
    _refuse_in_use(
        f"strategy {key!r}", experiments=await repository.experiments_using(session, strategy=key)
    )
    await session.delete(row)
    _changed_on_commit(session)


_listeners: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` when a strategy or segment changes in this process (send-time caches
    drop at once here; other processes see changes within their cache time)."""
    _listeners.append(listener)


def changed() -> None:
    for listener in _listeners:
        listener()


def _changed_on_commit(session: AsyncSession) -> None:
    """Drop the caches once the change is committed (before, a concurrent send could cache
    the old state again)."""

    async def hook() -> None:
        changed()

    after_commit(session, hook)


def strategy_out(row: Strategy) -> StrategyOut:
    cap = (
        FrequencyCapIn(max_patches=row.cap_max, days=row.cap_days)
        if row.cap_max is not None and row.cap_days is not None
        else None
    )
    return StrategyOut.model_validate(
        {
            "id": row.id,
            "key": row.key,
            "name": row.name,
            "scenario": row.scenario,
            "segment": row.segment,
            "patch_templates": row.patch_templates,
            "priority": row.priority,
            "status": row.status,
            "starts_at": row.starts_at,
            "ends_at": row.ends_at,
            "hours": HoursIn.model_validate(row.hours) if row.hours else None,
            "channels": row.channels,
            "frequency_cap": cap,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


# -- compiled for decisions ---------------------------------------------------------------


def _time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def compiled(
    row: Strategy, rule: Rule | None, matches: Callable[[Any], bool] | None = None
) -> decide.Strategy:
    """The decision's view of a stored strategy. A segment whose rule no longer validates
    (the attribute schema changed) matches nobody rather than failing sends. ``matches``: the
    segment's predicate when the caller compiled it already (strategies share segments)."""
    if matches is None:
        matches = compile_predicate(rule) if rule is not None else _nobody
    hours = (
        decide.HourWindow(_time(row.hours["start"]), _time(row.hours["end"])) if row.hours else None
    )
    cap = (
        decide.FrequencyCap(row.cap_max, row.cap_days)
        if row.cap_max is not None and row.cap_days is not None
        else None
    )
    return decide.Strategy(
        key=row.key,
        scenario=row.scenario,
        segment=row.segment,
        matches=matches,
        patch_templates=dict(row.patch_templates),
        priority=row.priority,
        active=row.status == "active",
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        hours=hours,
        channels=frozenset(row.channels or row.patch_templates) & frozenset(row.patch_templates),
        cap=cap,
    )


def _nobody(_: Any) -> bool:
    return False


async def load_for_scenario(session: AsyncSession, scenario: str) -> list[decide.Strategy]:
    """The scenario's strategies, compiled (segments validated against the current schema)."""
    rows = await repository.strategies_of(session, scenario)
    if not rows:
        return []
    schema = await attribute_schema(session)
    segments = await repository.segments_by_keys(session, [r.segment for r in rows])
    rules: dict[str, Rule | None] = {}
    for key, seg in segments.items():
        try:
            rules[key] = validate(seg.rule, schema)
        except AppError:
            log.warning("segment no longer fits the attribute schema", extra={"segment": key})
            rules[key] = None
    # one predicate per segment, however many strategies share it
    predicates = {k: compile_predicate(r) if r is not None else _nobody for k, r in rules.items()}
    return [compiled(r, rules.get(r.segment), predicates.get(r.segment, _nobody)) for r in rows]


class CapSpan(NamedTuple):
    days: int  # the longest frequency-cap period: how far back patches matter
    max_patches: int  # the largest cap: how many of them at most


def cap_span(rules: Sequence[decide.Strategy]) -> CapSpan | None:
    """What the frequency caps of ``rules`` need to know of a customer's past patches; None
    when no strategy has a cap."""
    caps = [s.cap for s in rules if s.cap is not None]
    if not caps:
        return None
    return CapSpan(max(c.days for c in caps), max(c.max_patches for c in caps))
