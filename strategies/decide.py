"""The strategy decision: which marketing patch, if any, a message carries. Pure: no I/O.

Given the customer's profile, the scenario, the channel, the time and the customer's recent
patches, `decide()` returns the winning strategy (or none) and, for every strategy of the
scenario, whether it matched and why not. `POST /v1/strategies/explain` shows exactly that,
and the message's decision record keeps it, so a patch (or its absence) explains itself.

Rules, in order:
1. No patch at all when the customer opted out of marketing on this channel, or when the
   send is immediate and falls in the customer's quiet hours (the transactional content is
   never affected: only the patch is dropped).
2. Strategies of the scenario are tried by priority (lower first, then key); a strategy
   matches when it is active, inside its date window and its hours of the day (customer's
   timezone), allows the channel, its segment matches the profile, and the customer's
   patches within its frequency-cap period are fewer than its cap (counted across all
   strategies and channels).
3. The first match wins; the strategies after it are reported as not tried.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from strategies.attributes import DEFAULT_TIMEZONE
from strategies.predicate import Predicate


class Reason(StrEnum):
    """Why a strategy did not win (or `matched` when it did)."""

    matched = "matched"
    inactive = "inactive"
    before_start = "before_start"
    after_end = "after_end"
    outside_hours = "outside_hours"
    channel_not_allowed = "channel_not_allowed"
    segment_not_matched = "segment_not_matched"
    frequency_capped = "frequency_capped"
    not_tried = "not_tried"  # a strategy of higher priority won


class NoPatch(StrEnum):
    """Why the message carries no patch at all, before any strategy is tried."""

    opted_out = "opted_out"
    quiet_hours = "quiet_hours"
    no_strategy = "no_strategy"  # none of the scenario's strategies matched (or none exist)


@dataclass(frozen=True)
class HourWindow:
    """Hours of the day, [start, end); a window that ends before it starts wraps midnight
    (21:00-08:00). start == end means the whole day."""

    start: time
    end: time

    def contains(self, at: time) -> bool:
        at = at.replace(tzinfo=None)
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


@dataclass(frozen=True)
class FrequencyCap:
    """At most `max_patches` patches per customer within `days` days."""

    max_patches: int
    days: int


@dataclass(frozen=True)
class Strategy:
    """What `decide()` needs of a strategy; the segment is already compiled to a predicate."""

    key: str
    scenario: str
    segment: str
    matches: Predicate
    patch_templates: Mapping[str, str]  # channel -> patch template key
    priority: int = 100
    active: bool = True
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    hours: HourWindow | None = None
    channels: frozenset[str] | None = None  # None: every channel
    cap: FrequencyCap | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class Customer:
    """The customer as the decision sees it."""

    profile: Mapping[str, Any]
    timezone: str = DEFAULT_TIMEZONE
    marketing_allowed: bool = True  # consent for marketing on this message's channel
    # when the customer receives patches around the decision (a scheduled one: when it goes)
    recent_patches: Sequence[datetime] = ()


@dataclass(frozen=True)
class Evaluation:
    strategy: str
    matched: bool
    reason: Reason
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    channel: str
    winner: Strategy | None
    evaluations: list[Evaluation] = field(default_factory=list)
    no_patch: NoPatch | None = None

    @property
    def patch_template(self) -> str | None:
        return self.winner.patch_templates.get(self.channel) if self.winner else None

    def record(self) -> dict[str, Any]:
        """The JSON kept on the message (its `decision`)."""
        return {
            "strategy": self.winner.key if self.winner else None,
            "patch_template": self.patch_template,
            "experiment": self.winner.experiment if self.winner else None,
            "no_patch": self.no_patch.value if self.no_patch else None,
            "evaluations": [
                {"strategy": e.strategy, "matched": e.matched, "reason": e.reason.value}
                | ({"detail": e.detail} if e.detail else {})
                for e in self.evaluations
            ],
        }


def customer_zone(name: str | None) -> ZoneInfo:
    """The customer's timezone; an unknown or missing name falls back to the default."""
    try:
        return ZoneInfo(name or DEFAULT_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


@functools.lru_cache(maxsize=1024)  # a batch decides its customers for one time: one per zone
def in_quiet_hours(now: datetime, quiet: HourWindow | None, timezone: str | None) -> bool:
    return quiet is not None and quiet.contains(now.astimezone(customer_zone(timezone)).time())


def decide(
    strategies: Sequence[Strategy],
    customer: Customer,
    *,
    scenario: str,
    channel: str,
    now: datetime,
    quiet_hours: HourWindow | None = None,
    immediate: bool = True,
) -> Decision:
    """The winning strategy for this message, or none, with every strategy's evaluation.
    ``now`` must be timezone-aware. ``immediate``: the message goes out now (a scheduled
    send is decided for its send time by the caller passing that time as ``now``)."""
    candidates = sorted(
        (s for s in strategies if s.scenario == scenario), key=lambda s: (s.priority, s.key)
    )
    if not customer.marketing_allowed:
        return _without_patch(channel, candidates, NoPatch.opted_out)
    if immediate and in_quiet_hours(now, quiet_hours, customer.timezone):
        return _without_patch(channel, candidates, NoPatch.quiet_hours)
    evaluations: list[Evaluation] = []
    winner: Strategy | None = None
    for strategy in candidates:
        if winner is not None:
            evaluations.append(Evaluation(strategy.key, False, Reason.not_tried, winner.key))
            continue
        reason, detail = _check(strategy, customer, channel=channel, now=now)
        evaluations.append(Evaluation(strategy.key, reason is Reason.matched, reason, detail))
        if reason is Reason.matched:
            winner = strategy
    return Decision(channel, winner, evaluations, None if winner else NoPatch.no_strategy)


def _without_patch(channel: str, candidates: Sequence[Strategy], why: NoPatch) -> Decision:
    evaluations = [Evaluation(s.key, False, Reason.not_tried, why.value) for s in candidates]
    return Decision(channel, None, evaluations, why)


def _check(
    strategy: Strategy, customer: Customer, *, channel: str, now: datetime
) -> tuple[Reason, str]:
    if not strategy.active:
        return Reason.inactive, ""
    if strategy.starts_at is not None and now < strategy.starts_at:
        return Reason.before_start, strategy.starts_at.isoformat()
    if strategy.ends_at is not None and now >= strategy.ends_at:
        return Reason.after_end, strategy.ends_at.isoformat()
    if strategy.hours is not None:
        local = now.astimezone(customer_zone(customer.timezone)).time()
        if not strategy.hours.contains(local):
            return Reason.outside_hours, local.strftime("%H:%M")
    if strategy.channels is not None and channel not in strategy.channels:
        return Reason.channel_not_allowed, channel
    if not strategy.matches(customer.profile):
        return Reason.segment_not_matched, strategy.segment
    cap = strategy.cap
    received = _received(cap, customer.recent_patches, now) if cap is not None else 0
    if cap is not None and received >= cap.max_patches:
        return Reason.frequency_capped, f"{received} in {cap.days} d (cap {cap.max_patches})"
    return Reason.matched, ""


_NONE_YET = 1 << 62  # a position after every candidate


@dataclass(frozen=True)
class _SegmentGroup:
    """The candidates of one segment, in priority order, with their positions in the whole
    candidate list: a segment is evaluated once, and only while it could still win."""

    first: int  # position of its best-placed strategy
    matches: Predicate
    members: tuple[tuple[int, Strategy], ...]


class Ruleset:
    """Strategies prepared for many decisions: sorted once per scenario and channel, only
    active ones on the fast path, grouped by segment so that each segment is evaluated at
    most once per decision and not at all once an earlier strategy has won.
    ``decide(explain=False)`` (the send path) records the winner and why there is none, not
    every strategy's verdict: ``explain=True`` gives the full list."""

    def __init__(self, strategies: Sequence[Strategy]) -> None:
        ordered = sorted(strategies, key=lambda s: (s.priority, s.key))
        self._all: dict[str, list[Strategy]] = {}
        for s in ordered:
            self._all.setdefault(s.scenario, []).append(s)
        self._fast: dict[tuple[str, str], list[_SegmentGroup]] = {}

    def _groups(self, scenario: str, channel: str) -> list[_SegmentGroup]:
        key = (scenario, channel)
        found = self._fast.get(key)
        if found is None:
            candidates = [
                s
                for s in self._all.get(scenario, ())
                if s.active and (s.channels is None or channel in s.channels)
            ]
            by_segment: dict[str, list[tuple[int, Strategy]]] = {}
            for index, s in enumerate(candidates):
                by_segment.setdefault(s.segment, []).append((index, s))
            # dicts keep insertion order: groups come by their best-placed strategy
            found = self._fast[key] = [
                _SegmentGroup(members[0][0], members[0][1].matches, tuple(members))
                for members in by_segment.values()
            ]
        return found

    def decide(
        self,
        customer: Customer,
        *,
        scenario: str,
        channel: str,
        now: datetime,
        quiet_hours: HourWindow | None = None,
        immediate: bool = True,
        explain: bool = False,
    ) -> Decision:
        if explain:
            return decide(
                self._all.get(scenario, []),
                customer,
                scenario=scenario,
                channel=channel,
                now=now,
                quiet_hours=quiet_hours,
                immediate=immediate,
            )
        if not customer.marketing_allowed:
            return Decision(channel, None, [], NoPatch.opted_out)
        if immediate and in_quiet_hours(now, quiet_hours, customer.timezone):
            return Decision(channel, None, [], NoPatch.quiet_hours)
        near: list[Evaluation] = []  # in the segment, but held back (hours, cap)
        winner = self._first_match(self._groups(scenario, channel), customer, now, near)
        if winner is None:
            return Decision(channel, None, near, NoPatch.no_strategy)
        return Decision(channel, winner, [*near, Evaluation(winner.key, True, Reason.matched)])

    def _first_match(
        self, groups: list[_SegmentGroup], customer: Customer, now: datetime, near: list[Evaluation]
    ) -> Strategy | None:
        """The first candidate, in priority order, that the customer's segment, the date
        window, the hours and the cap all let through; ``near`` gets the candidates before
        it that were held back by hours or cap, in priority order."""
        best, winner = _NONE_YET, None
        held: list[tuple[int, Evaluation]] = []
        local: list[time] = []  # the customer's time of day, worked out once if needed
        for group in groups:
            if group.first >= best:
                break  # every later group starts after the winner
            if not group.matches(customer.profile):
                continue
            for index, s in group.members:
                if index >= best:
                    break
                verdict = _held_back(s, customer, now, local)
                if verdict is None:
                    best, winner = index, s
                    break
                if verdict is Reason.outside_hours or verdict is Reason.frequency_capped:
                    held.append((index, Evaluation(s.key, False, verdict)))
        if held:
            held.sort(key=lambda item: item[0])
            near.extend(e for index, e in held if index < best)
        return winner


def _held_back(s: Strategy, customer: Customer, now: datetime, local: list[time]) -> Reason | None:
    """Why a strategy whose segment matched does not win now, or None when it does."""
    if s.starts_at is not None and now < s.starts_at:
        return Reason.before_start
    if s.ends_at is not None and now >= s.ends_at:
        return Reason.after_end
    if s.hours is not None:
        if not local:
            local.append(now.astimezone(customer_zone(customer.timezone)).time())
        if not s.hours.contains(local[0]):
            return Reason.outside_hours
    if s.cap is not None and _capped(s.cap, customer.recent_patches, now):
        return Reason.frequency_capped
    return None


def _received(cap: FrequencyCap, recent: Sequence[datetime], now: datetime) -> int:
    """Patches the customer receives within the cap's period of ``now``, before or after it
    (a patch scheduled for a later day counts then)."""
    period = timedelta(days=cap.days)
    since, until = now - period, now + period
    return sum(1 for at in recent if since < at < until)


def _capped(cap: FrequencyCap, recent: Sequence[datetime], now: datetime) -> bool:
    return _received(cap, recent, now) >= cap.max_patches
