from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, FieldError, NotFound, ValidationFailed
from app.ids import new_id
from app.scenarios import repository
from app.scenarios.models import Scenario
from app.scenarios.schemas import (
    Channel,
    MessageClass,
    ScenarioBase,
    ScenarioCreate,
    ScenarioOut,
    ScenarioTemplateOut,
    TemplateIn,
    VariableSpec,
)
from app.timeutil import utcnow
from templates import repository as templates_repository
from templates import service as templates


@dataclass(frozen=True)
class ChannelTemplate:
    key: str
    version: int
    subject: str | None
    body: str
    options: dict[str, Any]


@dataclass(frozen=True)
class ScenarioSpec:
    """What the send path needs of a scenario, loaded once and cached briefly."""

    key: str
    message_class: str
    channels: tuple[str, ...]
    # the scenario's variables, then those its templates declare besides
    variables: tuple[VariableSpec, ...]
    templates: dict[str, ChannelTemplate]
    # channel -> {"key", "version"}: recorded in each message's decision
    template_refs: dict[str, dict[str, Any]]


async def create(session: AsyncSession, data: ScenarioCreate) -> Scenario:
    if await repository.by_key(session, data.key) is not None:
        raise Conflict(
            f"scenario {data.key!r} already exists; PUT /v1/scenarios/{data.key} changes it"
        )
    now = utcnow()
    scenario = Scenario(id=new_id("scn"), key=data.key, created_at=now, templates={})
    await _apply(session, scenario, data)
    await repository.add(session, scenario)
    return scenario


async def replace(session: AsyncSession, key: str, data: ScenarioBase) -> Scenario:
    scenario = await get(session, key)
    await _apply(session, scenario, data)
    await session.flush()
    return scenario


async def _apply(session: AsyncSession, scenario: Scenario, data: ScenarioBase) -> None:
    scenario.templates = await _resolve_templates(session, scenario.key, data)
    scenario.name = data.name or scenario.key
    scenario.message_class = data.message_class.value
    scenario.channels = [c.value for c in data.channels]
    scenario.required_variables = [v.model_dump(mode="json") for v in data.variable_specs()]
    scenario.updated_at = utcnow()
    _cache.pop(scenario.key, None)


async def _resolve_templates(
    session: AsyncSession, scenario_key: str, data: ScenarioBase
) -> dict[str, str]:
    """Channel -> template key. A referenced template must exist, be of the channel and have
    a published version; an inline one becomes the template ``<scenario>.<channel>``."""
    variables = data.variable_specs()
    found: list[FieldError] = []
    for channel, tpl in data.templates.items():
        if isinstance(tpl, TemplateIn):
            prefix = f"templates.{channel.value}."
            found += templates.problems(channel.value, tpl, variables, prefix=prefix)
    if found:
        listed = "; ".join(f"{f.field}: {f.message}" for f in found)
        raise ValidationFailed(f"templates cannot be published: {listed}", fields=found)
    keys = {}
    for channel, tpl in data.templates.items():
        field = f"templates.{channel.value}"
        if isinstance(tpl, TemplateIn):
            key = f"{scenario_key}.{channel.value}"
            await templates.publish_inline(
                session,
                key=key,
                channel=channel.value,
                content=tpl,
                variables=variables,
                field=field,
            )
        else:
            key = tpl.key
            await _check_reference(session, channel, key, field)
        keys[channel.value] = key
    return keys


async def _check_reference(session: AsyncSession, channel: Channel, key: str, field: str) -> None:
    template = await templates_repository.by_key(session, key)
    if template is None:
        problem = f"no template {key!r}; create it with POST /v1/templates"
    elif template.channel != channel.value:
        problem = f"template {key!r} is for {template.channel}, not {channel.value}"
    elif template.current_version is None:
        problem = (
            f"template {key!r} has no published version; publish one with "
            f"POST /v1/templates/{key}/versions/{{version}}/publish"
        )
    else:
        return
    raise ValidationFailed.field(field, problem)


async def get(session: AsyncSession, key: str) -> Scenario:
    scenario = await repository.by_key(session, key)
    if scenario is None:
        raise NotFound(f"no scenario {key!r}; create it with POST /v1/scenarios")
    return scenario


async def to_out(session: AsyncSession, scenario: Scenario) -> ScenarioOut:
    current = await templates_repository.current_versions(
        session, list(scenario.templates.values())
    )
    out = {}
    for channel, key in scenario.templates.items():
        if key in current:
            version = current[key][1]
            out[Channel(channel)] = ScenarioTemplateOut(
                key=key,
                version=version.version,
                subject=version.subject,
                body=version.body,
                **version.options,
            )
    return ScenarioOut(
        id=scenario.id,
        key=scenario.key,
        name=scenario.name,
        message_class=MessageClass(scenario.message_class),
        channels=[Channel(c) for c in scenario.channels],
        required_variables=[VariableSpec.model_validate(v) for v in scenario.required_variables],
        templates=out,
        created_at=scenario.created_at,
        updated_at=scenario.updated_at,
    )


def _merged_variables(
    scenario: Iterable[dict[str, Any]], declared: Iterable[list[dict[str, Any]]]
) -> tuple[VariableSpec, ...]:
    out = [VariableSpec.model_validate(v) for v in scenario]
    seen = {(v.name, v.type) for v in out}
    for variables in declared:
        for spec in templates.specs(variables):
            if (spec.name, spec.type) not in seen:
                seen.add((spec.name, spec.type))
                out.append(spec)
    return tuple(out)


_cache: dict[str, tuple[float, int, ScenarioSpec]] = {}
SPEC_TTL_SECONDS = 2.0


async def load_spec(
    session: AsyncSession, key: str, *, overrides: Mapping[str, str] | None = None
) -> ScenarioSpec:
    """The scenario for sending, with the current version of each of its templates. Cached
    for a few seconds: an edit reaches other processes within SPEC_TTL_SECONDS (this one at
    once: a publish here drops the cache).

    ``overrides`` (channel -> template key) replaces the scenario's content on those channels
    (a campaign's or an experiment variant's template); such specs are not cached."""
    if overrides:
        return await _spec(session, await get(session, key), overrides)
    now = time.monotonic()
    epoch = templates.publish_epoch()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now and hit[1] == epoch:
        return hit[2]
    spec = await _spec(session, await get(session, key), {})
    _cache[key] = (now + SPEC_TTL_SECONDS, epoch, spec)
    return spec


async def _spec(
    session: AsyncSession, scenario: Scenario, overrides: Mapping[str, str]
) -> ScenarioSpec:
    keys = {**scenario.templates, **overrides}
    current = await templates_repository.current_versions(session, list(keys.values()))
    missing = [k for ch, k in overrides.items() if k not in current]
    if missing:
        raise ValidationFailed.field(
            "template", f"template {missing[0]!r} has no published version"
        )
    chosen = {ch: current[k][1] for ch, k in keys.items() if k in current}
    return ScenarioSpec(
        key=scenario.key,
        message_class=scenario.message_class,
        channels=tuple(scenario.channels),
        variables=_merged_variables(
            scenario.required_variables, (v.variables for v in chosen.values())
        ),
        templates={
            ch: ChannelTemplate(
                key=keys[ch],
                version=v.version,
                subject=v.subject,
                body=v.body,
                options=v.options or {},
            )
            for ch, v in chosen.items()
        },
        template_refs={ch: {"key": keys[ch], "version": v.version} for ch, v in chosen.items()},
    )


def clear_cache() -> None:
    _cache.clear()
