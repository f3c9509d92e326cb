from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, ValidationFailed
from app.ids import new_id
from app.scenarios import repository
from app.scenarios.models import Scenario
from app.scenarios.schemas import (
    Channel,
    MessageClass,
    ScenarioBase,
    ScenarioCreate,
    ScenarioOut,
    TemplateOut,
    VariableSpec,
)
from app.timeutil import utcnow
from templates.models import Template
from templates.renderer import TemplateError, compile_template, template_parts


@dataclass(frozen=True)
class ChannelTemplate:
    key: str
    subject: str | None
    body: str
    options: dict[str, Any]


@dataclass(frozen=True)
class ScenarioSpec:
    """What the send path needs of a scenario, loaded once and cached briefly."""

    key: str
    message_class: str
    channels: tuple[str, ...]
    variables: tuple[VariableSpec, ...]
    templates: dict[str, ChannelTemplate]


def _check_templates(data: ScenarioBase) -> None:
    for channel, tpl in data.templates.items():
        for path, source, html in template_parts(tpl.subject, tpl.body, tpl.options()):
            try:
                compile_template(source, html=html)
            except TemplateError as exc:
                raise ValidationFailed.field(
                    f"templates.{channel.value}.{path}", str(exc)
                ) from None


async def create(session: AsyncSession, data: ScenarioCreate) -> Scenario:
    if await repository.by_key(session, data.key) is not None:
        raise Conflict(
            f"scenario {data.key!r} already exists; PUT /v1/scenarios/{data.key} changes it"
        )
    _check_templates(data)
    now = utcnow()
    scenario = Scenario(id=new_id("scn"), key=data.key, created_at=now, templates={})
    await _apply(session, scenario, data)
    await repository.add(session, scenario)
    return scenario


async def replace(session: AsyncSession, key: str, data: ScenarioBase) -> Scenario:
    scenario = await get(session, key)
    _check_templates(data)
    await _apply(session, scenario, data)
    await session.flush()
    return scenario


async def _apply(session: AsyncSession, scenario: Scenario, data: ScenarioBase) -> None:
    now = utcnow()
    scenario.name = data.name or scenario.key
    scenario.message_class = data.message_class.value
    scenario.channels = [c.value for c in data.channels]
    scenario.required_variables = [v.model_dump(mode="json") for v in data.variable_specs()]
    scenario.updated_at = now
    keys = {c.value: f"{scenario.key}.{c.value}" for c in data.templates}
    existing = await repository.templates_by_keys(session, list(keys.values()))
    for channel, tpl in data.templates.items():
        key = keys[channel.value]
        row = existing.get(key)
        if row is None:
            row = Template(id=new_id("tpl"), key=key, channel=channel.value, created_at=now)
            session.add(row)
        row.subject, row.body, row.options, row.updated_at = (
            tpl.subject,
            tpl.body,
            tpl.options(),
            now,
        )
    scenario.templates = keys
    _cache.pop(scenario.key, None)


async def get(session: AsyncSession, key: str) -> Scenario:
    scenario = await repository.by_key(session, key)
    if scenario is None:
        raise NotFound(f"no scenario {key!r}; create it with POST /v1/scenarios")
    return scenario


async def to_out(session: AsyncSession, scenario: Scenario) -> ScenarioOut:
    templates = await repository.templates_by_keys(session, list(scenario.templates.values()))
    return ScenarioOut(
        id=scenario.id,
        key=scenario.key,
        name=scenario.name,
        message_class=MessageClass(scenario.message_class),
        channels=[Channel(c) for c in scenario.channels],
        required_variables=[VariableSpec.model_validate(v) for v in scenario.required_variables],
        templates={
            Channel(ch): TemplateOut(
                key=k, subject=templates[k].subject, body=templates[k].body, **templates[k].options
            )
            for ch, k in scenario.templates.items()
            if k in templates
        },
        created_at=scenario.created_at,
        updated_at=scenario.updated_at,
    )


_cache: dict[str, tuple[float, ScenarioSpec]] = {}
SPEC_TTL_SECONDS = 2.0


async def load_spec(session: AsyncSession, key: str) -> ScenarioSpec:
    """The scenario for sending. Cached for a few seconds: an edit reaches other processes
    within SPEC_TTL_SECONDS."""
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    scenario = await get(session, key)
    templates = await repository.templates_by_keys(session, list(scenario.templates.values()))
    spec = ScenarioSpec(
        key=scenario.key,
        message_class=scenario.message_class,
        channels=tuple(scenario.channels),
        variables=tuple(VariableSpec.model_validate(v) for v in scenario.required_variables),
        templates={
            ch: ChannelTemplate(
                key=k,
                subject=templates[k].subject,
                body=templates[k].body,
                options=templates[k].options or {},
            )
            for ch, k in scenario.templates.items()
        },
    )
    _cache[key] = (now + SPEC_TTL_SECONDS, spec)
    return spec


def clear_cache() -> None:
    _cache.clear()
