"""Patch experiments at send time: a strategy with a live experiment has its customers split
among the experiment's variants (app/strategies/patching.py asks :meth:`Experiments.choose`
for each channel the strategy wins).

- outside the sample (coverage, or a full ``sample_size``): the strategy's own patch;
- a holdout: no patch (reason "holdout");
- a patch variant: its template instead of the strategy's, on its channel or on every channel.

The message records ``experiment_id`` and ``variant`` (also for the holdout), its decision
says ``{"experiment": key, "variant": ...}``, and :func:`record` stores each customer's
assignment once, in the transaction that inserts the messages.

Live experiments (running, or completed with a winner) are loaded with one query and cached
as briefly as the strategies (app/strategies/patching.py), dropped at once when an experiment
changes in this process. A scenario without active strategies costs no query at all; one
whose strategies have no live experiment costs only the cached lookup.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from abtest.assignment import Assigner
from app.experiments import repository, service
from app.experiments.assigning import assigner, variant_for
from app.experiments.models import Experiment
from app.strategies.patching import CACHE_SECONDS, PatchTemplate, ScenarioPatches
from templates import repository as templates_repository

log = logging.getLogger("icc.experiments")
CHUNK = 500  # customer ids per lookup of recorded assignments


@dataclass(frozen=True)
class LiveVariant:
    key: str
    holdout: bool
    channel: str | None
    template: str | None


@dataclass
class LiveExperiment:
    row: Experiment  # loaded with expire_on_commit off: plain values, read only
    assigner: Assigner
    variants: dict[str, LiveVariant]
    # customers in the sample: recorded when loaded, plus those this process added since;
    # counted afresh under the sample's lock on PostgreSQL, where several processes add
    # (load below)
    taken: int
    full: bool = False  # counted full in the database (it stays so)


@dataclass(frozen=True)
class Live:
    by_strategy: dict[str, LiveExperiment]
    templates: dict[str, PatchTemplate]


@dataclass(frozen=True)
class Arm:
    """What a variant does on one channel: no patch (holdout) or its own patch template."""

    holdout: bool
    template: PatchTemplate | None = None


_cache: list[tuple[float, Live]] = []


def clear_cache() -> None:
    _cache.clear()


service.on_change(clear_cache)


async def live(session: AsyncSession) -> Live:
    """The live patch experiments by strategy, with their variants' patch templates."""
    now = time.monotonic()
    if _cache and _cache[0][0] > now:
        return _cache[0][1]
    rows = await repository.live_patch_experiments(session)
    counts = await repository.assignment_counts(
        session, [r.id for r in rows if r.sample_size is not None]
    )
    keys = sorted({v["template"] for r in rows for v in r.variants if v.get("template")})
    current = await templates_repository.current_versions(session, keys) if keys else {}
    found = Live(
        by_strategy={
            r.strategy: _live_experiment(r, counts.get(r.id, 0)) for r in rows if r.strategy
        },
        templates={key: _patch_template(key, version) for key, (_, version) in current.items()},
    )
    _cache[:] = [(now + CACHE_SECONDS, found)]
    return found


def _live_experiment(row: Experiment, assigned: int) -> LiveExperiment:
    variants = {
        v["key"]: LiveVariant(
            key=v["key"],
            holdout=bool(v.get("holdout")),
            channel=v.get("channel"),
            template=v.get("template"),
        )
        for v in row.variants
    }
    full = row.sample_size is not None and assigned >= row.sample_size
    return LiveExperiment(
        row=row, assigner=assigner(row), variants=variants, taken=assigned, full=full
    )


def _patch_template(key: str, version: Any) -> PatchTemplate:
    options = version.options or {}
    return PatchTemplate(
        key=key,
        version=version.version,
        body=version.body,
        html=options.get("html"),
        url=(options.get("wechat") or {}).get("url"),
    )


@dataclass(frozen=True)
class Peek:
    """A customer's place in a live experiment: its variant, or None and why not."""

    experiment: LiveExperiment
    variant: LiveVariant | None
    outside: str | None  # why the customer is not in the sample
    joins: bool = False  # a new customer taking a place in a capped sample


@dataclass
class Experiments:
    """The live experiments of one group's strategies, and who is already in a capped sample."""

    by_strategy: dict[str, LiveExperiment]
    templates: dict[str, PatchTemplate]
    # experiment id -> customers of the group already in a capped sample (sample_size)
    recorded: dict[str, set[str]] = field(default_factory=dict)

    def choose(self, message: dict[str, Any], channel: str, strategy: str) -> Arm | None:
        """The arm of ``message``'s customer on ``channel``, where ``strategy`` won; None:
        the strategy's own patch. Marks the message with the experiment and variant."""
        experiment = self.by_strategy.get(strategy)
        if experiment is None:
            return None
        variant = self._variant(message, experiment)
        return None if variant is None else self.arm(variant, channel)

    def arm(self, variant: LiveVariant, channel: str) -> Arm | None:
        """What ``variant`` does on ``channel``; None: the strategy's own patch."""
        if variant.holdout:
            return Arm(holdout=True)
        if variant.channel is not None and variant.channel != channel:
            return None  # the variant changes another channel's patch only
        template = self.templates.get(variant.template or "")
        if template is None:  # unpublished since the start: keep the customer patched
            log.warning("variant template unpublished", extra={"variant": variant.key})
            return None
        return Arm(holdout=False, template=template)

    def peek(
        self, customer_id: str, strategy: str, *, joined: Mapping[str, int] | None = None
    ) -> Peek | None:
        """Where ``customer_id`` stands in ``strategy``'s experiment (None: it has none), as
        a send would decide, without recording or counting anything (explain, dry run).
        ``joined``: experiment id -> new customers assumed to have entered its capped sample
        before this one."""
        experiment = self.by_strategy.get(strategy)
        if experiment is None:
            return None
        return self._place(experiment, customer_id, (joined or {}).get(experiment.row.id, 0))

    def _place(self, experiment: LiveExperiment, customer_id: str, joined: int = 0) -> Peek:
        row = experiment.row
        if row.winner is not None:  # rolled out: the winner for all, no one joins any more
            key = variant_for(row, experiment.assigner, customer_id)
            if key is None:
                return Peek(experiment, None, "outside the sample (coverage)")
            return Peek(experiment, experiment.variants[key], None)
        recorded = self.recorded.get(row.id)
        known = recorded is None or customer_id in recorded
        size = row.sample_size
        if not known and size is not None and experiment.taken + joined >= size:
            # the capped sample is complete: only its customers stay in
            return Peek(experiment, None, "the capped sample is full")
        key = variant_for(row, experiment.assigner, customer_id)
        if key is None:
            return Peek(experiment, None, "outside the sample (coverage)")
        return Peek(experiment, experiment.variants[key], None, joins=not known)

    def _variant(self, message: dict[str, Any], experiment: LiveExperiment) -> LiveVariant | None:
        row = experiment.row
        current = message.get("experiment_id")
        if current is not None:  # decided on an earlier channel of this message
            return experiment.variants[message["variant"]] if current == row.id else None
        customer_id: str = message["customer_id"]
        place = self._place(experiment, customer_id)
        if place.variant is None:
            return None
        if place.joins:
            self.recorded[row.id].add(customer_id)  # counted once, whatever its later messages
            experiment.taken += 1
        key = place.variant.key
        message["decision"]["experiment"], message["decision"]["variant"] = row.key, key
        if row.winner is not None:
            # The winner's treatment, outside the experiment's counts: its report compares
            # the arms as assigned, and these customers were assigned (or not) before.
            message["decision"]["rollout"] = True
        else:
            message["experiment_id"], message["variant"] = row.id, key
        return place.variant


async def load(
    session: AsyncSession,
    scenarios: Mapping[str, ScenarioPatches],
    customer_ids: Sequence[str],
    *,
    sending: bool = False,
) -> Experiments | None:
    """The live experiments of the group's active strategies; None when there are none (the
    common case: no query beyond the cached lookup, none at all without strategies).
    ``sending``: the group will join customers to capped samples (explain and dry runs
    only look, and take no lock)."""
    strategies = [p.rule_keys for p in scenarios.values() if p.rule_keys]
    if not strategies:
        return None
    found = await live(session)
    mine = {k: e for k, e in found.by_strategy.items() if any(k in keys for keys in strategies)}
    if not mine:
        return None
    experiments = Experiments(mine, found.templates)
    capped = sorted((e for e in mine.values() if e.row.sample_size is not None), key=_lock_key)
    for e in capped:  # locked in one order: groups cannot deadlock on them
        # A capped sample keeps its customers; new ones join while it is short. Several
        # processes accepting at once would each count from their cached size and together
        # overshoot it (by up to a whole batch each): on PostgreSQL a group that may add to
        # it holds the sample until it commits (SQLite's one writer serializes groups
        # anyway), and counts it afresh, as on SQLite: the count in memory also counts
        # joins rolled back since. A sample the database counted full stays full
        # (assignments are kept), so groups then go on side by side.
        if sending and not e.full:
            await repository.lock_sample(session, e.row.id)
            counted = await repository.assignment_counts(session, [e.row.id])
            e.taken = counted.get(e.row.id, 0)
            e.full = e.taken >= (e.row.sample_size or 0)
        experiments.recorded[e.row.id] = await _recorded(session, e.row.id, customer_ids)
    return experiments


def _lock_key(experiment: LiveExperiment) -> int:
    return repository.sample_lock_key(experiment.row.id)


async def _recorded(
    session: AsyncSession, experiment_id: str, customer_ids: Sequence[str]
) -> set[str]:
    unique = list(dict.fromkeys(customer_ids))
    found: set[str] = set()
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        found.update(await repository.assignments_of(session, experiment_id, chunk))
    return found


async def record(
    session: AsyncSession, experiments: Experiments | None, messages: Iterable[dict[str, Any]]
) -> None:
    """Store the assignments of the inserted ``messages`` (once per customer: sticky)."""
    if experiments is None:
        return
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for m in messages:
        if m.get("experiment_id") is not None:
            rows.setdefault(
                (m["experiment_id"], m["customer_id"]),
                {
                    "experiment_id": m["experiment_id"],
                    "customer_id": m["customer_id"],
                    "variant": m["variant"],
                    "assigned_at": m["created_at"],
                },
            )
    await repository.record_assignments(session, list(rows.values()))
