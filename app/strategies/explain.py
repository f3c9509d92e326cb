"""What the strategies decide for one customer (explain) or for a sample of customers (dry
run), channel by channel, exactly as a send would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.customers import repository as customer_rows
from app.customers import service as customers
from app.customers.consent import Purpose, allows
from app.customers.models import Customer
from app.errors import NotFound
from app.scenarios import service as scenarios
from app.settings import MarketingSettings, Settings
from app.strategies import repository, service
from app.strategies.schemas import (
    ChannelDecision,
    DryRunIn,
    DryRunOut,
    EvaluationOut,
    ExplainIn,
    ExplainOut,
)
from app.timeutil import utcnow
from strategies import decide
from strategies.attributes import profile_of


def quiet_hours(marketing: MarketingSettings) -> decide.HourWindow:
    start = time.fromisoformat(marketing.quiet_hours_start)
    return decide.HourWindow(start, time.fromisoformat(marketing.quiet_hours_end))


def profile(customer: Customer) -> dict[str, Any]:
    """The profile rules see: attributes, tags and the built-in fields."""
    attributes = {**(customer.attributes or {}), service.TAGS: list(customer.tags or [])}
    return profile_of(attributes, locale=customer.locale, timezone=customer.timezone)


async def _decider(
    session: AsyncSession, customer: Customer | None, settings: Settings
) -> tuple[Mapping[str, Any], str | None, Any]:
    if customer is None:
        return {}, None, None
    consent = await customers.consent_of(
        session, customer.id, marketing_granted=settings.customers.marketing_granted
    )
    return profile(customer), customer.timezone, consent


def decisions(
    rules: list[decide.Strategy],
    *,
    scenario: str,
    channels: list[str],
    who: decide.Customer,
    consent: Any,
    now: datetime,
    settings: Settings,
) -> list[decide.Decision]:
    out = []
    for channel in channels:
        allowed = consent is None or allows(consent, channel, Purpose.marketing)
        customer = decide.Customer(
            who.profile, who.timezone, marketing_allowed=allowed, recent_patches=who.recent_patches
        )
        out.append(
            decide.decide(
                rules,
                customer,
                scenario=scenario,
                channel=channel,
                now=now,
                quiet_hours=quiet_hours(settings.marketing),
            )
        )
    return out


def channel_out(decision: decide.Decision) -> ChannelDecision:
    return ChannelDecision(
        channel=decision.channel,
        strategy=decision.winner.key if decision.winner else None,
        patch_template=decision.patch_template,
        no_patch=decision.no_patch.value if decision.no_patch else None,
        evaluations=[
            EvaluationOut(
                strategy=e.strategy,
                matched=e.matched,
                reason=e.reason.value,
                detail=e.detail or None,
            )
            for e in decision.evaluations
        ],
    )


async def explain(session: AsyncSession, data: ExplainIn, *, settings: Settings) -> ExplainOut:
    scenario = await scenarios.get(session, data.scenario)
    now = data.at or utcnow()
    stored = await customer_rows.get(session, data.customer_id) if data.customer_id else None
    if data.customer_id and stored is None and data.profile is None:
        raise NotFound(f"no customer {data.customer_id!r}; send a profile to decide with")
    rules = await service.load_for_scenario(session, data.scenario)
    base, timezone, consent = await _decider(session, stored, settings)
    window = service.cap_window(now, rules)
    recent = (
        (await repository.recent_patches(session, [stored.id], *window)).get(stored.id, [])
        if stored is not None and window is not None
        else []
    )
    who = decide.Customer(
        dict(data.profile) if data.profile is not None else base,
        timezone or decide.DEFAULT_TIMEZONE,
        recent_patches=recent,
    )
    found = decisions(
        rules,
        scenario=data.scenario,
        channels=list(scenario.channels),
        who=who,
        consent=consent,
        now=now,
        settings=settings,
    )
    return ExplainOut(
        scenario=data.scenario,
        customer_id=data.customer_id,
        at=now,
        channels=[channel_out(d) for d in found],
    )


async def dry_run(session: AsyncSession, data: DryRunIn, *, settings: Settings) -> DryRunOut:
    """The distribution of decisions over a random sample of customers (of a segment)."""
    scenario = await scenarios.get(session, data.scenario)
    now = data.at or utcnow()
    rule = await service.segment_rule(session, data.segment) if data.segment else None
    sample = await repository.sample_matching(session, rule, data.sample_size)
    rules = await service.load_for_scenario(session, data.scenario)
    window = service.cap_window(now, rules)
    recent = (
        await repository.recent_patches(session, [c.id for c in sample], *window)
        if window is not None
        else {}
    )
    counts: dict[str, Counter[str]] = {c: Counter() for c in scenario.channels}
    for customer in sample:
        _, timezone, consent = await _decider(session, customer, settings)
        who = decide.Customer(
            profile(customer),
            timezone or decide.DEFAULT_TIMEZONE,
            True,
            recent.get(customer.id, []),
        )
        for decision in decisions(
            rules,
            scenario=data.scenario,
            channels=list(scenario.channels),
            who=who,
            consent=consent,
            now=now,
            settings=settings,
        ):
            label = decision.winner.key if decision.winner else f"none:{decision.no_patch}"
            counts[decision.channel][label] += 1
    return DryRunOut(
        scenario=data.scenario,
        sampled=len(sample),
        at=now,
        channels={channel: dict(c.most_common()) for channel, c in counts.items()},
    )
