"""What the strategies decide for one customer (explain) or for a sample of customers (dry
run), channel by channel, exactly as a send would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.customers import repository as customer_rows
from app.customers import service as customers
from app.errors import FieldError, NotFound, ValidationFailed
from app.experiments import patching as experiments
from app.experiments.patching import Experiments, Peek
from app.scenarios import service as scenarios
from app.settings import Settings
from app.strategies import patching, repository, service
from app.strategies.schemas import (
    ChannelDecision,
    DryRunIn,
    DryRunOut,
    EvaluationOut,
    ExperimentArmOut,
    ExplainIn,
    ExplainOut,
)
from app.timeutil import utcnow
from strategies import decide
from strategies.attributes import DEFAULT_TIMEZONE

OUTSIDE = "outside_sample"  # dry run: customers of an experiment's strategy not in its sample


def channel_out(decision: decide.Decision, arm: ExperimentArmOut | None = None) -> ChannelDecision:
    """The API shape of one channel's decision (with the customer's experiment arm)."""
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
        experiment=arm,
    )


def peeks(
    found: Experiments,
    customer_id: str,
    decisions: Sequence[decide.Decision],
    joined: Mapping[str, int] | None = None,
) -> list[Peek | None]:
    """Per channel, the customer's place in the winning strategy's live experiment (None:
    none), as a send decides it: the first channel that puts the customer in a sample gives
    the message its experiment; another experiment on a later channel leaves it out."""
    claimed: Peek | None = None
    found_peeks: list[Peek | None] = []
    for decision in decisions:
        winner = decision.winner.key if decision.winner else None
        peek = found.peek(customer_id, winner, joined=joined) if winner else None
        if peek is not None and claimed is not None and peek.experiment is not claimed.experiment:
            why = f"the message counts for experiment {claimed.experiment.row.key!r}"
            peek = Peek(peek.experiment, None, why)
        if claimed is None and peek is not None and peek.variant is not None:
            claimed = peek
        found_peeks.append(peek)
    return found_peeks


def arms_out(
    found: Experiments, customer_id: str | None, decisions: Sequence[decide.Decision]
) -> list[ExperimentArmOut | None]:
    """The customer's arm per channel (see :func:`peeks`); nothing is recorded."""
    if customer_id is None:
        why = "no customer id: the assignment hashes the customer id"
        return [
            _outside(found.by_strategy[d.winner.key].row.key, why)
            if d.winner is not None and d.winner.key in found.by_strategy
            else None
            for d in decisions
        ]
    return [
        _arm_out(found, peek, d.channel) if peek is not None else None
        for peek, d in zip(peeks(found, customer_id, decisions), decisions, strict=True)
    ]


def _arm_out(found: Experiments, peek: Peek, channel: str) -> ExperimentArmOut:
    if peek.variant is None:
        return _outside(peek.experiment.row.key, peek.outside)
    arm = found.arm(peek.variant, channel)
    template = arm.template.key if arm is not None and arm.template is not None else None
    return ExperimentArmOut(
        experiment=peek.experiment.row.key,
        variant=peek.variant.key,
        in_sample=True,
        holdout=peek.variant.holdout,
        patch_template=template,
        reason=None if arm is not None else _not_here(peek.variant.channel),
    )


def _outside(experiment: str, reason: str | None) -> ExperimentArmOut:
    return ExperimentArmOut(
        experiment=experiment,
        variant=None,
        in_sample=False,
        holdout=False,
        patch_template=None,
        reason=reason,
    )


def _not_here(channel: str | None) -> str:
    if channel is not None:
        return f"the variant changes the {channel} patch only: the strategy's own here"
    return "the variant's template has no published version: the strategy's own"


async def explain(session: AsyncSession, data: ExplainIn, *, settings: Settings) -> ExplainOut:
    scenario = await scenarios.get(session, data.scenario)
    now = data.at or utcnow()
    stored = await customer_rows.get(session, data.customer_id) if data.customer_id else None
    if data.customer_id and stored is None and data.profile is None:
        raise NotFound(f"no customer {data.customer_id!r}; send a profile to decide with")
    ids = [stored.id] if stored is not None else []
    patcher = await patching.load(
        session,
        scenarios=[data.scenario],
        customer_ids=ids,
        settings=settings,
        now=now,
        phones=[stored.phone] if stored is not None and stored.phone else [],
    )
    assigned = [data.customer_id] if data.customer_id else []
    found = await experiments.load(session, patcher.scenarios, assigned)
    base = patching.profile(stored) if stored is not None else {}
    who = decide.Customer(
        await _inline_profile(session, data.profile) if data.profile is not None else base,
        stored.timezone if stored is not None else DEFAULT_TIMEZONE,
        recent_patches=patcher.recent.get(stored.id, []) if stored is not None else [],
    )
    decisions = patcher.decisions(
        data.scenario,
        scenario.channels,
        who=who,
        consent=(
            patcher.consent(stored.id, phone=stored.phone, customer=stored)
            if stored is not None
            else None
        ),
        at=now,
        explain=True,
    )
    return ExplainOut(
        scenario=data.scenario,
        customer_id=data.customer_id,
        at=now,
        channels=[
            channel_out(d, arm)
            for d, arm in zip(decisions, _arms(found, data.customer_id, decisions), strict=True)
        ],
    )


async def _inline_profile(session: AsyncSession, values: Mapping[str, Any]) -> dict[str, Any]:
    """The profile given, read as a send reads it; a value that cannot be is a 422 here
    (a send decides without it: the notice goes)."""
    schema = await customers.attribute_schema(session)
    profile, refused = patching.coerced_profile(schema, values)
    if refused:
        found = [FieldError(field=f"profile.{n}", message=m) for n, m in refused.items()]
        raise ValidationFailed("; ".join(f"{f.field}: {f.message}" for f in found), fields=found)
    return profile


def _arms(
    found: Experiments | None, customer_id: str | None, decisions: Sequence[decide.Decision]
) -> Sequence[ExperimentArmOut | None]:
    if found is None:
        return [None] * len(decisions)
    return arms_out(found, customer_id, decisions)


async def dry_run(session: AsyncSession, data: DryRunIn, *, settings: Settings) -> DryRunOut:
    """The distribution of decisions over a random sample of customers (of a segment), as
    sends would decide them."""
    scenario = await scenarios.get(session, data.scenario)
    now = data.at or utcnow()
    rule = await service.segment_rule(session, data.segment) if data.segment else None
    sample = await repository.sample_matching(session, rule, data.sample_size, now=now)
    patcher = await patching.load(
        session,
        scenarios=[data.scenario],
        customer_ids=[c.id for c in sample],
        settings=settings,
        now=now,
        phones=[c.phone for c in sample if c.phone],
    )
    found = await experiments.load(session, patcher.scenarios, [c.id for c in sample])
    counts: dict[str, Counter[str]] = {c: Counter() for c in scenario.channels}
    split = _Split(found)
    for customer in sample:
        who = decide.Customer(
            patching.profile(customer),
            customer.timezone or DEFAULT_TIMEZONE,
            recent_patches=patcher.recent.get(customer.id, []),
        )
        decisions = patcher.decisions(
            data.scenario,
            scenario.channels,
            who=who,
            consent=patcher.consent(customer.id, phone=customer.phone, customer=customer),
            at=now,
        )
        for decision in decisions:
            label = decision.winner.key if decision.winner else f"none:{decision.no_patch}"
            counts[decision.channel][label] += 1
        split.count(customer.id, decisions)
    return DryRunOut(
        scenario=data.scenario,
        sampled=len(sample),
        at=now,
        channels={channel: dict(c.most_common()) for channel, c in counts.items()},
        experiments=split.result(),
    )


class _Split:
    """A dry run's customers per experiment variant, each once: in the experiment of the
    first channel that puts them in a sample (as a send records it), else `outside_sample`
    of the first experiment met; a capped sample fills up as the sends would fill it."""

    def __init__(self, found: Experiments | None) -> None:
        self.found = found
        self.counts: dict[str, Counter[str]] = {}
        self.joined: Counter[str] = Counter()  # experiment id -> new customers in its sample

    def count(self, customer_id: str, decisions: Sequence[decide.Decision]) -> None:
        if self.found is None:
            return
        found = [p for p in peeks(self.found, customer_id, decisions, self.joined) if p]
        inside = [p for p in found if p.variant is not None]
        if inside:
            peek = inside[0]
            assert peek.variant is not None
            self.joined[peek.experiment.row.id] += peek.joins
            self.counts.setdefault(peek.experiment.row.key, Counter())[peek.variant.key] += 1
        elif found:
            self.counts.setdefault(found[0].experiment.row.key, Counter())[OUTSIDE] += 1

    def result(self) -> dict[str, dict[str, int]]:
        return {key: dict(c.most_common()) for key, c in self.counts.items()}
