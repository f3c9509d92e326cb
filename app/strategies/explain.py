"""What the strategies decide for one customer (explain) or for a sample of customers (dry
run), channel by channel, exactly as a send would."""

from __future__ import annotations

from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession

from app.customers import repository as customer_rows
from app.errors import NotFound
from app.scenarios import service as scenarios
from app.settings import Settings
from app.strategies import patching, repository, service
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
    ids = [stored.id] if stored is not None else []
    patcher = await patching.load(
        session, scenarios=[data.scenario], customer_ids=ids, settings=settings, now=now
    )
    base = patching.profile(stored) if stored is not None else {}
    who = decide.Customer(
        dict(data.profile) if data.profile is not None else base,
        stored.timezone if stored is not None else decide.DEFAULT_TIMEZONE,
        recent_patches=patcher.recent.get(stored.id, []) if stored is not None else [],
    )
    found = patcher.decisions(
        data.scenario,
        scenario.channels,
        who=who,
        consent=patcher.consent(stored.id) if stored is not None else None,
        at=now,
        explain=True,
    )
    return ExplainOut(
        scenario=data.scenario,
        customer_id=data.customer_id,
        at=now,
        channels=[channel_out(d) for d in found],
    )


async def dry_run(session: AsyncSession, data: DryRunIn, *, settings: Settings) -> DryRunOut:
    """The distribution of decisions over a random sample of customers (of a segment), as
    sends would decide them."""
    scenario = await scenarios.get(session, data.scenario)
    now = data.at or utcnow()
    rule = await service.segment_rule(session, data.segment) if data.segment else None
    sample = await repository.sample_matching(session, rule, data.sample_size)
    patcher = await patching.load(
        session,
        scenarios=[data.scenario],
        customer_ids=[c.id for c in sample],
        settings=settings,
        now=now,
    )
    counts: dict[str, Counter[str]] = {c: Counter() for c in scenario.channels}
    for customer in sample:
        who = decide.Customer(
            patching.profile(customer),
            customer.timezone or decide.DEFAULT_TIMEZONE,
            recent_patches=patcher.recent.get(customer.id, []),
        )
        for decision in patcher.decisions(
            data.scenario, scenario.channels, who=who, consent=patcher.consent(customer.id), at=now
        ):
            label = decision.winner.key if decision.winner else f"none:{decision.no_patch}"
            counts[decision.channel][label] += 1
    return DryRunOut(
        scenario=data.scenario,
        sampled=len(sample),
        at=now,
        channels={channel: dict(c.most_common()) for channel, c in counts.items()},
    )
