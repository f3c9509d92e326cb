"""The marketing patch at send time: for each message of a group, decide (strategies/decide.py)
per channel of its plan, render the winning patch template and put it into that channel's
content (strategies/patch.py); record why on the message.

Loaded once per group in a few queries (strategies of the scenario, cached briefly like the
scenario itself; the customers' consent; their recent patches when a strategy has a cap,
the customers held until the group commits: repository.hold_for_caps). A scenario without
strategies costs nothing. A patch that cannot be rendered is dropped and the reason
recorded: the transactional message always goes out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from datetime import time as clock
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks import repository as callbacks
from app.customers import service as customers
from app.customers.attributes import AttributeType, InvalidValue, coerce
from app.customers.consent import Consent, Purpose, allows, consent_state
from app.customers.fields import phone_key, reply_keys
from app.customers.models import StoredCustomer
from app.settings import MarketingSettings, Settings
from app.strategies import repository, service
from app.tracking.links import TrackedHosts, as_tracked, written_hosts
from strategies import decide
from strategies.attributes import DEFAULT_TIMEZONE, profile_of
from strategies.patch import Patch, PatchSettings, compose
from strategies.predicate import evaluated_at
from templates import repository as templates_repository
from templates.renderer import TemplateError, render

if TYPE_CHECKING:  # app.experiments.patching imports this module
    from app.experiments.patching import Experiments

log = logging.getLogger("icc.patching")
CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class PatchTemplate:
    key: str
    version: int
    body: str
    html: str | None
    url: str | None


@dataclass(frozen=True)
class ScenarioPatches:
    rules: list[decide.Strategy]  # the active ones
    templates: dict[str, PatchTemplate]
    ruleset: decide.Ruleset  # every strategy of the scenario: explain reports inactive ones
    # worked out once per load rather than per group of messages:
    rule_keys: frozenset[str] = frozenset()  # of the active ones
    caps: service.CapSpan | None = None  # how far back frequency caps look, and how many
    # the declared attributes' types, which an inline profile's values are read as
    attributes: Mapping[str, AttributeType] = field(default_factory=dict)


def quiet_hours(marketing: MarketingSettings) -> decide.HourWindow:
    return _hour_window(marketing.quiet_hours_start, marketing.quiet_hours_end)


@lru_cache(maxsize=16)
def _hour_window(start: str, end: str) -> decide.HourWindow:
    # every group of sends asks: parsed once per value
    return decide.HourWindow(clock.fromisoformat(start), clock.fromisoformat(end))


def profile(customer: StoredCustomer) -> dict[str, Any]:
    """The profile rules see: attributes, tags and the built-in fields."""
    attributes = {**(customer.attributes or {}), service.TAGS: list(customer.tags or [])}
    return profile_of(attributes, locale=customer.locale, timezone=customer.timezone)


def coerced_profile(
    schema: Mapping[str, AttributeType], values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A send's (or explain's) inline profile in the form stored profiles have, which is
    what rules compare ("900000.00" is the number a customer's PUT stores), and why each
    value that has no such form was left out. Undeclared names (tags, built-in fields) and
    None (no value) are kept as given."""
    out: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for name, value in values.items():
        type_ = schema.get(name)
        if type_ is None or value is None:
            out[name] = value
            continue
        try:
            out[name] = coerce(type_, value)
        except InvalidValue as exc:
            refused[name] = f"{exc} ({type_.value})"
    return out, refused


_cache: dict[str, tuple[float, ScenarioPatches]] = {}


def clear_cache() -> None:
    _cache.clear()


service.on_change(clear_cache)


async def scenario_patches(session: AsyncSession, scenario: str) -> ScenarioPatches:
    now = time.monotonic()
    hit = _cache.get(scenario)
    if hit is not None and hit[0] > now:
        return hit[1]
    every = await service.load_for_scenario(session, scenario)
    rules = [r for r in every if r.active]
    keys = sorted({k for r in rules for k in r.patch_templates.values()})
    current = await templates_repository.current_versions(session, keys) if keys else {}
    found = ScenarioPatches(
        rules=rules,
        templates={
            key: PatchTemplate(
                key=key,
                version=version.version,
                body=version.body,
                html=(version.options or {}).get("html"),
                url=((version.options or {}).get("wechat") or {}).get("url"),
            )
            for key, (_, version) in current.items()
        },
        ruleset=decide.Ruleset(every),
        rule_keys=frozenset(r.key for r in rules),
        caps=service.cap_span(rules),
        # only inline profiles need it, and only when something is decided
        attributes=await customers.attribute_schema(session) if rules else {},
    )
    _cache[scenario] = (now + CACHE_SECONDS, found)
    return found


@dataclass
class Patcher:
    """The patch decisions of one group of messages."""

    settings: Settings
    scenarios: dict[str, ScenarioPatches] = field(default_factory=dict)
    consents: dict[str, Consent] = field(default_factory=dict)
    # the latest opt-out reply from each of the group's numbers (by phone_key) that sent one
    sms_opt_outs: dict[str, datetime] = field(default_factory=dict)
    recent: dict[str, list[datetime]] = field(default_factory=dict)
    experiments: Experiments | None = None  # live patch experiments (app/experiments)

    def __post_init__(self) -> None:
        self.quiet = quiet_hours(self.settings.marketing)
        self.composing = _patch_settings(self.settings)
        self._default = _default_consent(self.settings.customers.marketing_granted)

    def link_hosts(self) -> frozenset[str]:
        """The hosts the group's patch templates write out (strategies' and experiments')."""
        templates = [t for p in self.scenarios.values() for t in p.templates.values()]
        if self.experiments is not None:
            templates += self.experiments.templates.values()
        return written_hosts([t.body, t.html, t.url] for t in templates)

    def track_only(self, hosts: TrackedHosts) -> None:
        """Measure SMS length budgets with the links tracking will rewrite: ``hosts``' only."""
        if self.composing.as_tracked is not None:
            base = self.settings.tracking.public_base_url
            measure = partial(as_tracked, base_url=base, hosts=hosts)
            self.composing = replace(self.composing, as_tracked=measure)

    def apply(
        self,
        message: dict[str, Any],
        *,
        customer: StoredCustomer | None,
        inline_profile: Mapping[str, Any] | None,
        now: datetime,
    ) -> None:
        """Decide and compose the patch of one prepared message row (changed in place)."""
        patches = self.scenarios.get(message["scenario"])
        if patches is None or not patches.rules:
            return
        inline, refused = coerced_profile(patches.attributes, inline_profile or {})
        who = self._who(message["customer_id"], customer, inline)
        # decided for when it goes out: a scheduled message by its send time
        send_at = message.get("send_at")
        at = send_at if send_at is not None and send_at > now else now
        records: dict[str, Any] = {}
        winner: str | None = None
        for decision in self.decisions(
            message["scenario"],
            message["channels"],
            who=who,
            consent=self.consent(
                message["customer_id"], phone=message["recipient"].get("phone"), customer=customer
            ),
            at=at,
        ):
            channel = decision.channel
            record = decision.record()
            if decision.winner is not None:
                record["composition"] = self._composition(
                    message, channel, decision, patches, timezone=who.timezone
                )
                if record["composition"]["applied"] and winner is None:
                    winner = decision.winner.key
            records[channel] = record
        if refused:  # the message goes; the decision did without these values
            records["profile_ignored"] = refused
        message["decision"]["patch"] = records
        message["decision"]["strategy"] = winner
        message["patch"] = winner
        if winner is not None:
            # the group's later messages to the customer count it against their caps: the
            # patches loaded before the group do not include the group's own
            self.recent.setdefault(message["customer_id"], []).append(at)

    def decisions(
        self,
        scenario: str,
        channels: Sequence[str],
        *,
        who: decide.Customer,
        consent: Consent | None,
        at: datetime,
        explain: bool = False,
    ) -> list[decide.Decision]:
        """The decision for each channel (``consent`` None: marketing allowed everywhere),
        at ``at``: segments' relative dates too. ``explain``: every strategy's verdict, not
        only the winner's (explain endpoint)."""
        patches = self.scenarios.get(scenario)
        if patches is None:
            return []
        found = []
        with evaluated_at(at):
            for channel in channels:
                allowed = consent is None or allows(consent, channel, Purpose.marketing)
                found.append(
                    patches.ruleset.decide(
                        decide.Customer(who.profile, who.timezone, allowed, who.recent_patches),
                        scenario=scenario,
                        channel=channel,
                        now=at,
                        quiet_hours=self.quiet,
                        explain=explain,
                    )
                )
        return found

    def _who(
        self, customer_id: str, customer: StoredCustomer | None, inline: Mapping[str, Any] | None
    ) -> decide.Customer:
        base = profile(customer) if customer is not None else {}
        timezone = customer.timezone if customer is not None else DEFAULT_TIMEZONE
        return decide.Customer(
            {**base, **inline} if inline else base,
            timezone,
            recent_patches=tuple(self.recent.get(customer_id, ())),
        )

    def consent(
        self,
        customer_id: str,
        *,
        phone: str | None = None,
        customer: StoredCustomer | None = None,
        own_phone: str | None = None,
    ) -> Consent:
        """The customer's consent: recorded decisions over the defaults; with the ``phone``
        their SMS goes to, the opt-out replies from that number too (``customer``: the
        stored one, or ``own_phone``: its number, which their later opt-in speaks for)."""
        state = self.consents.get(customer_id, self._default)
        if phone is None or not self.sms_opt_outs:
            return state
        replies = [at for k in reply_keys(phone) if (at := self.sms_opt_outs.get(k)) is not None]
        if not replies:
            return state
        replied = max(replies)
        own_phone = customer.phone if customer is not None else own_phone
        own = own_phone is not None and phone_key(own_phone) == phone_key(phone)
        return customers.with_sms_opt_out(state, replied, own_number=own)

    def _composition(
        self,
        message: dict[str, Any],
        channel: str,
        decision: decide.Decision,
        patches: ScenarioPatches,
        *,
        timezone: str,
    ) -> dict[str, Any]:
        """The winning strategy's patch, or that of the customer's experiment variant, its
        times shown in the customer's ``timezone``."""
        arm = None
        if self.experiments is not None and decision.winner is not None:
            arm = self.experiments.choose(message, channel, decision.winner.key)
        if arm is not None and arm.holdout:
            return {"applied": False, "reason": "holdout"}
        variant = arm.template if arm else None
        return self._compose(message, channel, decision, patches, variant, timezone=timezone)

    def _compose(
        self,
        message: dict[str, Any],
        channel: str,
        decision: decide.Decision,
        patches: ScenarioPatches,
        variant: PatchTemplate | None = None,
        *,
        timezone: str,
    ) -> dict[str, Any]:
        key = decision.patch_template
        template = variant or patches.templates.get(key or "")
        if template is None:
            return {"applied": False, "reason": f"patch template {key!r} has no published version"}
        try:
            patch = _rendered(template, message["variables"], timezone)
        except TemplateError as exc:
            return {"applied": False, "reason": f"patch does not render: {exc}"}
        composed = compose(channel, message["content"][channel], patch, self.composing)
        if composed.applied:
            # kept to send instead if the customer opts out of marketing before it goes
            unpatched = message["unpatched"] = message.get("unpatched") or {}
            unpatched[channel] = message["content"][channel]
            message["content"][channel] = composed.content
        return {"template": {"key": template.key, "version": template.version}} | composed.record()


def _rendered(template: PatchTemplate, variables: Mapping[str, Any], timezone: str) -> Patch:
    """Every part of the patch rendered as the notice is (its jump URL is Jinja2 too)."""

    def text(source: str | None, *, html: bool = False) -> str | None:
        return None if not source else render(source, variables, html=html, timezone=timezone)

    return Patch(
        text=text(template.body) or "",
        html=text(template.html, html=True),
        url=text(template.url),
    )


def _patch_settings(settings: Settings) -> PatchSettings:
    m = settings.marketing
    tracking = settings.tracking
    return PatchSettings(
        sms_max_segments=m.sms_max_segments,
        opt_out_hint=m.opt_out_hint,
        sms_signature=m.sms_signature,
        as_tracked=(
            partial(as_tracked, base_url=tracking.public_base_url) if tracking.enabled else None
        ),
    )


@lru_cache(maxsize=2)
def _default_consent(granted: bool) -> Consent:
    """The consent of a customer with no recorded decision; shared, so read, never changed."""
    return consent_state([], marketing_granted=granted)


def _capped(patches: ScenarioPatches | None) -> bool:
    return patches is not None and patches.caps is not None


async def load(
    session: AsyncSession,
    *,
    scenarios: Sequence[str],
    customer_ids: Sequence[str],
    settings: Settings,
    now: datetime,
    phones: Collection[str] = (),
    times: Collection[datetime] = (),
    sending: Iterable[tuple[str, str]] = (),
) -> Patcher:
    """Everything the group's patch decisions need. ``phones``: the numbers the group's SMS
    would go to, whose opt-out replies count (see ``Patcher.consent``); ``times``: when the
    group's messages go (scheduled ones: their send time; default: ``now``), around which
    frequency caps count patches; ``sending``: (scenario, customer id) of each of the
    group's sends, when its patches are for good (not for explain): the customers a capped
    strategy may decide for are held until the transaction ends, their patches counted by
    one group at a time (repository.hold_for_caps)."""
    patcher = Patcher(settings)
    for key in set(scenarios):
        patcher.scenarios[key] = await scenario_patches(session, key)
    # consent also decides the channels of transactional content (app/messages/compose.py)
    patcher.consents = await customers.consents_of(
        session, customer_ids, marketing_granted=settings.customers.marketing_granted
    )
    if phones:
        keys = {key for phone in phones for key in reply_keys(phone)}
        patcher.sms_opt_outs = await callbacks.sms_opt_outs(session, keys)
    spans = [p.caps for p in patcher.scenarios.values() if p.caps is not None]
    if spans:
        capped = {c for key, c in sending if _capped(patcher.scenarios.get(key))}
        await repository.hold_for_caps(session, capped)
        patcher.recent = await repository.recent_patches(
            session,
            customer_ids,
            at=min(times, default=now),
            span=timedelta(days=max(s.days for s in spans)),
            most=max(s.max_patches for s in spans),
            latest=max(times, default=now),
        )
    return patcher
