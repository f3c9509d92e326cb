"""Campaign definitions and their lifecycle: draft -> scheduled/running <-> paused ->
completed | cancelled. The runner (runner.py) does the sending."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import repository
from app.campaigns.models import Campaign
from app.campaigns.schemas import (
    CampaignIn,
    CampaignOut,
    CampaignStatus,
    CampaignUpdate,
)
from app.errors import Conflict, NotFound, ValidationFailed
from app.experiments import repository as experiments
from app.experiments.models import Experiment
from app.ids import new_id
from app.messages import repository as messages
from app.messages.variables import check_variables
from app.scenarios import repository as scenarios
from app.scenarios.models import Scenario
from app.scenarios.service import load_spec
from app.strategies import repository as segments
from app.strategies import service as strategies
from app.timeutil import as_utc, utcnow
from templates import repository as templates


def sends(experiment: Experiment) -> bool:
    """Whether a campaign may send for ``experiment``: while it runs, and once completed with
    a winner (the rest of the audience gets the winner)."""
    return experiment.status == "running" or (
        experiment.status == "completed" and experiment.winner is not None
    )


async def get(session: AsyncSession, key: str) -> Campaign:
    found = await repository.by_key(session, key)
    if found is None:
        raise NotFound(f"no campaign {key!r}; create it with POST /v1/campaigns")
    return found


async def create(session: AsyncSession, data: CampaignIn) -> Campaign:
    """A draft campaign, its references checked."""
    if await repository.by_key(session, data.key) is not None:
        raise Conflict(f"campaign {data.key!r} already exists; PATCH /v1/campaigns/{data.key}")
    now = utcnow()
    campaign = Campaign(
        id=new_id("cmp"),
        status=CampaignStatus.draft.value,
        processed=0,
        sent=0,
        held_out=0,
        skipped=0,
        created_at=now,
        updated_at=now,
        **_columns(data.model_dump()),
    )
    await _check(session, campaign)
    session.add(campaign)
    await session.flush()
    return campaign


async def update(session: AsyncSession, key: str, data: CampaignUpdate) -> Campaign:
    """Change the fields given, while the campaign is a draft."""
    campaign = await get(session, key)
    _require(campaign, {CampaignStatus.draft}, "changed")
    for name, value in _columns(data.model_dump(exclude_unset=True)).items():
        if value is None and name in {"scenario", "segment", "variables", "respect_quiet_hours"}:
            raise ValidationFailed.field(name, "cannot be null")
        setattr(campaign, name, value)
    await _check(session, campaign)
    campaign.updated_at = utcnow()
    await session.flush()
    return campaign


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("starts_at") is not None:
        fields["starts_at"] = as_utc(fields["starts_at"])
    return fields


async def _check(session: AsyncSession, campaign: Campaign) -> None:
    """422 naming the field when a reference is missing or does not fit."""
    scenario = await _marketing_scenario(session, campaign.scenario)
    if await segments.segment(session, campaign.segment) is None:
        raise ValidationFailed.field(
            "segment", f"no segment {campaign.segment!r}; create it with POST /v1/segments"
        )
    overrides: dict[str, str] = {}
    if campaign.template is not None:
        channel = await _template_channel(session, campaign.template, "template")
        _offered(scenario, channel, "template", f"template {campaign.template!r} is for")
        overrides[channel] = campaign.template
    variants: list[dict[str, str]] = [{}]
    if campaign.experiment is not None:
        experiment = await _campaign_experiment(session, campaign)
        variants = await _variant_overrides(session, scenario, experiment)
    for extra in variants:
        spec = await load_spec(session, scenario.key, overrides={**overrides, **extra})
        errors = check_variables(spec.variables, campaign.variables)
        if errors:
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            raise ValidationFailed(detail, fields=errors)


async def _marketing_scenario(session: AsyncSession, key: str) -> Scenario:
    scenario = await scenarios.by_key(session, key)
    if scenario is None:
        raise ValidationFailed.field("scenario", f"no scenario {key!r}")
    if scenario.message_class != "marketing":
        raise ValidationFailed.field(
            "scenario",
            f"scenario {key!r} is {scenario.message_class}; campaigns send marketing scenarios",
        )
    return scenario


def _offered(scenario: Scenario, channel: str, field: str, what: str) -> None:
    if channel not in scenario.channels:
        raise ValidationFailed.field(
            field,
            f"{what} {channel}, which scenario {scenario.key!r} does not offer "
            f"({', '.join(scenario.channels)})",
        )


async def _template_channel(session: AsyncSession, key: str, field: str) -> str:
    template = await templates.by_key(session, key)
    if template is None:
        raise ValidationFailed.field(field, f"no template {key!r}")
    if template.current_version is None:
        raise ValidationFailed.field(field, f"template {key!r} has no published version")
    return template.channel


async def _campaign_experiment(session: AsyncSession, campaign: Campaign) -> Experiment:
    key = str(campaign.experiment)
    experiment = await experiments.by_key(session, key)
    if experiment is None:
        raise ValidationFailed.field("experiment", f"no experiment {key!r}")
    if experiment.kind != "campaign":
        raise ValidationFailed.field(
            "experiment",
            f"experiment {key!r} is a {experiment.kind} experiment, not a campaign one",
        )
    if experiment.status != "draft" and not sends(experiment):
        raise ValidationFailed.field("experiment", f"experiment {key!r} is {experiment.status}")
    if experiment.segment != campaign.segment:
        raise ValidationFailed.field(
            "experiment",
            f"experiment {key!r} samples segment {experiment.segment!r}, "
            f"not the campaign's {campaign.segment!r}",
        )
    return experiment


async def _variant_overrides(
    session: AsyncSession, scenario: Scenario, experiment: Experiment
) -> list[dict[str, str]]:
    """Each sending variant's template override (channel -> key); its channel checked."""
    found = []
    for variant in experiment.variants:
        if variant.get("holdout"):
            continue
        name = variant.get("key")
        field = f"experiment (variant {name!r})"
        channel = str(variant.get("channel"))
        _offered(scenario, channel, "experiment", f"variant {name!r} sends on")
        template = variant.get("template")
        if template:
            if await _template_channel(session, str(template), field) != channel:
                raise ValidationFailed.field(field, f"template {template!r} is not for {channel}")
            found.append({channel: str(template)})
        else:
            found.append({})
    return found


def _require(campaign: Campaign, allowed: set[CampaignStatus], action: str) -> None:
    if campaign.status not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise Conflict(
            f"campaign {campaign.key!r} is {campaign.status}; it can be {action} only when {wanted}"
        )


async def start(session: AsyncSession, key: str) -> Campaign:
    """draft -> scheduled (starts_at ahead) or running; the audience is counted now."""
    campaign = await get(session, key)
    _require(campaign, {CampaignStatus.draft}, "started")
    await _check(session, campaign)  # references may have changed since the draft was saved
    if campaign.experiment is not None:
        experiment = await experiments.by_key(session, campaign.experiment)
        if experiment is not None and not sends(experiment):
            raise Conflict(
                f"experiment {experiment.key!r} is {experiment.status}; start it before "
                "the campaign"
            )
    rule = await strategies.segment_rule(session, campaign.segment)
    now = utcnow()
    later = campaign.starts_at is not None and campaign.starts_at > now
    values: dict[str, Any] = {"audience": await segments.count_matching(session, rule, now=now)}
    if not later:
        values["started_at"] = now
    status = CampaignStatus.scheduled if later else CampaignStatus.running
    return await _move(session, campaign, status, "started", values)


async def pause(session: AsyncSession, key: str) -> Campaign:
    campaign = await get(session, key)
    _require(campaign, {CampaignStatus.running, CampaignStatus.scheduled}, "paused")
    return await _move(session, campaign, CampaignStatus.paused, "paused", {})


async def resume(session: AsyncSession, key: str) -> Campaign:
    """Back to running; a campaign paused before its start waits for it again."""
    campaign = await get(session, key)
    _require(campaign, {CampaignStatus.paused}, "resumed")
    now = utcnow()
    if campaign.started_at is None and campaign.starts_at is not None and campaign.starts_at > now:
        return await _move(session, campaign, CampaignStatus.scheduled, "resumed", {})
    values = {} if campaign.started_at else {"started_at": now}
    return await _move(session, campaign, CampaignStatus.running, "resumed", values)


# A cancel that loses its compare-and-set to a runner moving the campaign on (to completed,
# at its last chunk) tries again from the new status, this many times
CANCEL_TRIES = 3


async def cancel(session: AsyncSession, key: str) -> Campaign:
    """Stop the campaign and the messages it made that have not gone. A completed campaign
    (every customer gone through) can still be cancelled while messages it deferred to the
    end of quiet hours wait."""
    campaign = await get(session, key)
    now = utcnow()
    for _ in range(CANCEL_TRIES):
        if campaign.status == CampaignStatus.cancelled:
            raise Conflict(f"campaign {key!r} is cancelled already")
        completed = campaign.status == CampaignStatus.completed
        values = {} if completed else {"finished_at": now}
        # the status first: a chunk in progress then fails its compare-and-set and makes nothing
        moved = await repository.set_status(
            session, campaign.id, campaign.status, "cancelled", updated_at=now, **values
        )
        if moved:
            break
        fresh = await repository.by_id(session, campaign.id)
        assert fresh is not None
        campaign = fresh
    else:
        raise Conflict(f"campaign {key!r} is {campaign.status}; it cannot be cancelled")
    stopped = await messages.cancel_campaign_messages(session, campaign.id, now=now)
    if completed and not stopped:
        raise Conflict(f"campaign {key!r} is completed already; all its messages have gone")
    await repository.set_status(
        session, campaign.id, "cancelled", "cancelled", cancelled=len(stopped)
    )
    fresh = await repository.by_id(session, campaign.id)
    assert fresh is not None
    return fresh


async def _move(
    session: AsyncSession,
    campaign: Campaign,
    status: CampaignStatus,
    action: str,
    values: dict[str, Any],
) -> Campaign:
    """A compare-and-set on the status read: a runner finishing the campaign meanwhile
    wins, and the caller gets a 409 naming the status it ended in."""
    old = campaign.status
    moved = await repository.set_status(
        session, campaign.id, old, status.value, updated_at=utcnow(), **values
    )
    fresh = await repository.by_id(session, campaign.id)
    assert fresh is not None
    if not moved:
        raise Conflict(f"campaign {campaign.key!r} is {fresh.status}; it cannot be {action}")
    return fresh


def to_out(campaign: Campaign) -> CampaignOut:
    audience = campaign.audience
    percent = 100.0 if campaign.status == "completed" else 0.0
    if audience and campaign.status != "completed":
        percent = min(100.0, round(100.0 * campaign.processed / audience, 2))
    return CampaignOut(
        id=campaign.id,
        key=campaign.key,
        name=campaign.name,
        scenario=campaign.scenario,
        template=campaign.template,
        segment=campaign.segment,
        experiment=campaign.experiment,
        variables=campaign.variables,
        sample_fraction=campaign.sample_fraction,
        starts_at=campaign.starts_at,
        rate_per_second=campaign.rate_per_second,
        respect_quiet_hours=campaign.respect_quiet_hours,
        status=CampaignStatus(campaign.status),
        audience=audience,
        processed=campaign.processed,
        sent=campaign.sent,
        held_out=campaign.held_out,
        skipped=campaign.skipped,
        cancelled=campaign.cancelled,
        percent=percent,
        last_error=campaign.last_error,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
    )
