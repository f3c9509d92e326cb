"""The campaign runner: walks a running campaign's audience chunk by chunk and sends through
the accept path (consent, rendering, idempotency, outbox and queueing all apply).

Exactly-once progress: a chunk's messages, assignments and the campaign's new cursor and
counters commit in ONE transaction, and the campaign update is a compare-and-set on the
cursor read at the chunk's start. Of two runners (two worker processes) on the same chunk one
commits and the other rolls back; a crash loses the chunk in progress, never half of it; a
pause or cancel takes effect after the chunk in progress. Idempotency keys
(``campaign:{id}:{customer}``) are the second guard against a customer getting two messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from abtest.assignment import Assigner, Variant
from app.campaigns import repository
from app.campaigns.models import Campaign
from app.campaigns.repository import Advance, Member
from app.campaigns.service import sends
from app.customers import repository as customers
from app.db import commit
from app.errors import AppError, IdempotencyConflict
from app.experiments import repository as experiments
from app.experiments.assigning import assigner, variant_for
from app.experiments.models import Experiment
from app.ids import first_id_at
from app.messages.schemas import MessageItem
from app.messages.service import AcceptOutcome, AcceptRequest, Origin, accept_many
from app.queue.base import MessageQueue
from app.scenarios import repository as scenarios
from app.scenarios.models import Scenario
from app.scenarios.schemas import Channel
from app.settings import Settings
from app.strategies import patching
from app.strategies import repository as segments
from app.strategies import service as strategies
from app.timeutil import utcnow
from strategies.decide import HourWindow, customer_zone
from templates import repository as templates

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.campaigns")

# A release time this close to now is no backlog: the message goes at once.
BACKLOG_SLACK = timedelta(seconds=1)
# While a backlog is released, how often a runner looks at the campaign again (a pause or a
# cancel meanwhile needs nothing of it; this only bounds the sleep).
BACKLOG_RECHECK = 60.0


def quiet_until(now: datetime, window: HourWindow, timezone: str | None) -> datetime | None:
    """When the customer's quiet hours end, if ``now`` is within them; else None."""
    zone = customer_zone(timezone)
    local = now.astimezone(zone)
    if not window.contains(local.time()):
        return None
    end = datetime.combine(local.date(), window.end, tzinfo=zone)
    if end <= local:
        end = datetime.combine(local.date() + timedelta(days=1), window.end, tzinfo=zone)
    return end


@dataclass
class _Tally:
    """A chunk's counts, and the requests and assignments it makes."""

    requests: list[AcceptRequest] = field(default_factory=list)
    assignments: list[dict[str, Any]] = field(default_factory=list)
    held_out: int = 0
    sent: int = 0
    skipped: int = 0
    error: str | None = None

    def count(self, outcomes: Sequence[AcceptOutcome]) -> None:
        for request, outcome in zip(self.requests, outcomes, strict=True):
            # a taken key means the customer already has this campaign's message
            if not isinstance(outcome, AppError) or isinstance(outcome, IdempotencyConflict):
                self.sent += 1
                continue
            self.skipped += 1
            if self.error is None:
                self.error = f"customer {request.item.customer_id}: {outcome.detail}"


@dataclass
class _Setup:
    """What a chunk needs besides its customers, read at its start (a winner chosen or a
    template published meanwhile applies from the next chunk on)."""

    campaign: Campaign
    templates: dict[str, str]
    experiment: Experiment | None
    assigned: Assigner | None
    sampler: Assigner | None
    remaining: int | None  # of the experiment's sample_size
    quiet: HourWindow | None
    now: datetime
    # with a rate, the backlog of messages deferred by quiet hours: the window's end it is
    # released from, and when its next message may go (moved on by each one scheduled)
    release_from: datetime | None = None
    release_at: datetime | None = None


class CampaignRunner:
    """Runs due campaigns. Any number of runners (tasks or processes) may run at once."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        queue: MessageQueue,
        settings: Settings,
        *,
        chunk_size: int | None = None,
        read_sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        # SQLite: looking for due campaigns every second need not take the write lock
        self.read_sessionmaker = read_sessionmaker or sessionmaker
        self.queue = queue
        self.settings = settings
        self.chunk_size = chunk_size or settings.campaigns.chunk_size
        self._next_at: dict[str, float] = {}  # campaign id -> when its throttle allows a chunk
        self._rates: dict[str, float | None] = {}

    async def tick(self) -> float | None:
        """One chunk of every due campaign whose throttle allows it. Returns how long to wait
        before the next tick: 0 after work, the throttle's wait, or None when idle."""
        async with self.read_sessionmaker() as session:
            due = await repository.due_ids(session, utcnow())
        worked = False
        for campaign_id in due:
            if self._next_at.get(campaign_id, 0.0) > time.monotonic():
                continue
            started = time.monotonic()
            try:
                created = await self.run_chunk(campaign_id)
            except Exception:  # one broken campaign must not stop the others
                log.exception("campaign chunk failed; retrying", extra={"campaign": campaign_id})
                continue
            if created is not None:
                worked = True
                rate = self._rates.get(campaign_id)
                self._next_at[campaign_id] = started + (created / rate if rate else 0.0)
        if worked:
            return 0.0
        waits = [self._next_at.get(c, 0.0) - time.monotonic() for c in due]
        return min((w for w in waits if w > 0), default=None)

    async def run_chunk(self, campaign_id: str) -> int | None:
        """Process the campaign's next chunk; the messages created, or None when the
        campaign is not running or another runner took the chunk."""
        async with self.sessionmaker() as session:
            campaign = await repository.by_id(session, campaign_id)
            if campaign is not None and campaign.status == "scheduled":
                campaign = await self._begin(session, campaign)
            if campaign is None or campaign.status != "running":
                await session.rollback()
                return None
            return await self._chunk(session, campaign)

    async def _begin(self, session: AsyncSession, campaign: Campaign) -> Campaign | None:
        """A scheduled campaign whose time has come: running, with a fresh audience count."""
        now = utcnow()
        if campaign.starts_at is not None and campaign.starts_at > now:
            return None
        rule = await strategies.segment_rule(session, campaign.segment)
        audience = await segments.count_matching(session, rule, now=now)
        moved = await repository.set_status(
            session, campaign.id, "scheduled", "running", started_at=now, audience=audience
        )
        if not moved:
            return None
        await commit(session)
        return await repository.by_id(session, campaign.id)

    async def _chunk(self, session: AsyncSession, campaign: Campaign) -> int | None:
        self._rates[campaign.id] = campaign.rate_per_second
        experiment = None
        if campaign.experiment is not None:
            experiment = await experiments.by_key(session, campaign.experiment)
        scenario = await scenarios.by_key(session, campaign.scenario)
        problem = _unrunnable(campaign, experiment, scenario)
        if problem is not None:
            await self._halt(session, campaign, problem)
            return None
        hold = backlog_wait(campaign, utcnow())
        if hold > 0:
            campaign_id = campaign.id
            await session.rollback()
            self._next_at[campaign_id] = time.monotonic() + min(hold, BACKLOG_RECHECK)
            return None
        size = await self._allowance(session, campaign)
        if size == 0:  # other runners used this second's messages
            # read before the rollback, which expires the row (a read after it is a query)
            campaign_id, rate = campaign.id, campaign.rate_per_second or 1.0
            await session.rollback()
            self._next_at[campaign_id] = time.monotonic() + max(0.05, min(1.0, 1.0 / rate))
            return None
        setup = await self._setup(session, campaign, experiment)
        rule = await strategies.segment_rule(session, campaign.segment)
        # the audience of its start, whatever the time now (relative dates in the rule)
        audience = segments.matches(session, rule, now=campaign.started_at)
        members = await repository.chunk(session, audience, campaign.cursor, size)
        # A member erased since the audience was read, or being erased, gets nothing, not
        # even an assignment under its id; the others' erasures wait for this chunk's commit
        # (their buckets are held until then) and then erase what it made.
        ids = [m.id for m in members]
        erasing = await customers.hold_customers(session, ids)
        present = await customers.existing_ids(session, ids) - erasing
        tally = await self._decide(session, setup, [m for m in members if m.id in present])
        tally.skipped += len(members) - len(present)
        outcomes = await accept_many(
            session, tally.requests, queue=self.queue, settings=self.settings, held=True
        )
        tally.count(outcomes)
        await experiments.record_assignments(session, tally.assignments)
        step = Advance(
            cursor=members[-1].id if members else campaign.cursor,
            processed=len(members),
            sent=tally.sent,
            held_out=tally.held_out,
            skipped=tally.skipped,
            error=tally.error,
            finished=len(members) < size,
            release=(setup.release_from, setup.release_at),
        )
        if not await repository.advance(session, campaign.id, campaign.cursor, step, setup.now):
            await session.rollback()  # paused, cancelled, or another runner took this chunk
            session.info.pop("after_commit", None)  # nothing of it is to be enqueued
            return None
        await commit(session)  # then the messages are enqueued
        if step.finished:
            log.info("campaign completed", extra={"campaign": campaign.key})
        return tally.sent

    @staticmethod
    async def _halt(session: AsyncSession, campaign: Campaign, problem: str) -> None:
        """Pause a campaign that cannot go on as defined, saying why: better than sending
        to customers outside the experiment it was meant for."""
        now = utcnow()
        await repository.set_status(
            session, campaign.id, "running", "paused", last_error=problem, updated_at=now
        )
        await commit(session)
        log.warning("campaign paused: %s", problem, extra={"campaign": campaign.key})

    async def _allowance(self, session: AsyncSession, campaign: Campaign) -> int:
        """How many customers the chunk may take. With a rate: what is left of the last
        second's messages (of 1/rate seconds below one a second), counted in the database, so
        that runners in several processes keep to the rate together (this runner's own pace
        is kept by ``tick``; this is the shared guard)."""
        rate = campaign.rate_per_second
        if rate is None:
            return self.chunk_size
        window = max(1.0, 1.0 / rate)
        limit = max(1, int(rate * window))
        since = first_id_at("msg", int((time.time() - window) * 1000))
        recent = await repository.created_since(session, f"campaign:{campaign.key}", since)
        return max(0, min(self.chunk_size, limit - recent))

    async def _setup(
        self, session: AsyncSession, campaign: Campaign, experiment: Experiment | None
    ) -> _Setup:
        overrides = {}
        if campaign.template is not None:
            template = await templates.by_key(session, campaign.template)
            if template is not None:
                overrides[template.channel] = template.key
        sampler = None
        if experiment is None and campaign.sample_fraction is not None:
            sampler = Assigner(
                salt=campaign.key, variants=[Variant("in", 1.0)], coverage=campaign.sample_fraction
            )
        remaining = None
        if experiment is not None and experiment.sample_size is not None:
            taken = await repository.assigned_count(session, experiment.id)
            remaining = experiment.sample_size - taken
        return _Setup(
            campaign=campaign,
            templates=overrides,
            experiment=experiment,
            assigned=assigner(experiment) if experiment is not None else None,
            sampler=sampler,
            remaining=remaining,
            quiet=patching.quiet_hours(self.settings.marketing)
            if campaign.respect_quiet_hours
            else None,
            now=utcnow(),
            release_from=campaign.release_from,
            release_at=campaign.release_at,
        )

    async def _decide(
        self, session: AsyncSession, setup: _Setup, members: Sequence[Member]
    ) -> _Tally:
        """Who gets what: not sampled (nothing), held out (an assignment), or a message."""
        tally = _Tally()
        experiment, assigned = setup.experiment, setup.assigned
        if experiment is None or assigned is None:
            for member in members:
                if setup.sampler is None or setup.sampler.assign(member.id) is not None:
                    tally.requests.append(self._request(setup, member, None))
            return tally
        known: dict[str, str] = {}
        if setup.remaining is not None:
            known = await experiments.assignments_of(
                session, experiment.id, [m.id for m in members]
            )
        variants = {v["key"]: v for v in experiment.variants}
        # Rolled out: the winner for everyone in the coverage, outside the experiment's
        # counts (its report compares the arms as assigned before)
        rollout = experiment.winner is not None
        for member in members:
            key = variant_for(experiment, assigned, member.id)
            if key is None or not (rollout or self._admit(setup, member.id, known)):
                continue
            variant = variants.get(key, {"key": key})
            if variant.get("holdout"):
                tally.held_out += 1
            else:
                tally.requests.append(self._request(setup, member, variant, counted=not rollout))
            if rollout:
                continue
            tally.assignments.append(
                {
                    "experiment_id": experiment.id,
                    "customer_id": member.id,
                    "variant": key,
                    "assigned_at": setup.now,
                }
            )
        return tally

    @staticmethod
    def _admit(setup: _Setup, customer_id: str, known: dict[str, str]) -> bool:
        """Within the experiment's sample_size: those already assigned, and new ones while
        places remain."""
        if setup.remaining is None or customer_id in known:
            return True
        if setup.remaining <= 0:
            return False
        setup.remaining -= 1
        return True

    def _request(
        self,
        setup: _Setup,
        member: Member,
        variant: dict[str, Any] | None,
        *,
        counted: bool = True,
    ) -> AcceptRequest:
        """``counted``: the message belongs to the experiment's arm (not a rollout's)."""
        campaign = setup.campaign
        overrides = dict(setup.templates)
        channels = None
        if variant is not None and variant.get("channel"):
            channels = [Channel(variant["channel"])]
            if variant.get("template"):
                overrides[variant["channel"]] = variant["template"]
        item = MessageItem(
            customer_id=member.id,
            variables=campaign.variables,
            channels=channels,
            send_at=_send_at(setup, member),
        )
        tagged = counted and setup.experiment is not None and variant is not None
        origin = Origin(
            campaign_id=campaign.id,
            experiment_id=setup.experiment.id if tagged and setup.experiment else None,
            variant=variant["key"] if tagged and variant else None,
        )
        return AcceptRequest(
            scenario=campaign.scenario,
            owner=f"campaign:{campaign.key}",
            item=item,
            idempotency_key=f"campaign:{campaign.id}:{member.id}",
            templates=tuple(sorted(overrides.items())),
            origin=origin,
        )


def _send_at(setup: _Setup, member: Member) -> datetime | None:
    """When the member's message goes: now (None), or at the end of their quiet hours. With
    a rate, the messages deferred to a window's end are spaced by the rate from there
    (released all at once, a night's messages would take the provider's capacity from
    account notices at 08:00), and the runner makes no more while they go (``backlog_wait``).
    A customer of another time zone, whose window ends at another time, is not spaced."""
    if setup.quiet is None:
        return None
    due = quiet_until(setup.now, setup.quiet, member.timezone)
    rate = setup.campaign.rate_per_second
    if due is None or not rate:
        return due
    if _backlog_pending(setup.release_at, setup.now):
        if due != setup.release_from:
            return due
    else:
        setup.release_from, setup.release_at = due, due
    at = max(due, setup.release_at or due)
    setup.release_at = at + timedelta(seconds=1 / rate)
    # a backlog longer than the day runs into the next night: that night's end, unspaced
    return quiet_until(at, setup.quiet, member.timezone) or at


def _backlog_pending(release_at: datetime | None, now: datetime) -> bool:
    return release_at is not None and release_at > now + BACKLOG_SLACK


def backlog_wait(campaign: Campaign, now: datetime) -> float:
    """Seconds until the campaign's quiet-hours backlog has gone, while it is being released
    (0 otherwise): the runner makes nothing meanwhile, so that the backlog and the messages
    made after it keep to the rate together."""
    start, end = campaign.release_from, campaign.release_at
    if not campaign.rate_per_second or start is None or end is None or not start <= now < end:
        return 0.0
    return (end - now).total_seconds()


def _unrunnable(
    campaign: Campaign, experiment: Experiment | None, scenario: Scenario | None
) -> str | None:
    # marketing consent is what a campaign's sends are checked against: a scenario made
    # transactional since the start would reach customers who opted out of marketing
    if scenario is None:
        return f"scenario {campaign.scenario!r} no longer exists"
    if scenario.message_class != "marketing":
        return (
            f"scenario {scenario.key!r} is {scenario.message_class} now; campaigns send "
            "marketing scenarios"
        )
    if campaign.experiment is None:
        return None
    if experiment is None:
        return f"experiment {campaign.experiment!r} no longer exists"
    if not sends(experiment):
        return f"experiment {experiment.key!r} is {experiment.status}, not running"
    try:
        assigner(experiment)
    except (ValueError, KeyError, TypeError) as exc:  # variants stored by hand, not by the API
        return f"experiment {experiment.key!r} cannot assign: {exc}"
    return None


async def run_forever(runtime: Runtime) -> None:
    """The background loop of a worker (embedded ``icc serve``, ``icc worker``): every
    ``campaigns.tick_seconds`` (sooner while there is work), one chunk of each due campaign."""
    runner = CampaignRunner(
        runtime.sessionmaker,
        runtime.queue,
        runtime.settings,
        read_sessionmaker=runtime.read_sessionmaker,
    )
    idle = runtime.settings.campaigns.tick_seconds
    while True:
        try:
            wait = await runner.tick()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("campaign tick failed; retrying")
            wait = None
        await asyncio.sleep(idle if wait is None else min(wait, idle))
