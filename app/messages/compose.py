"""Turn one validated request into the rows to insert (pure: no I/O)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from app.customers.consent import Consent, allows
from app.customers.models import StoredCustomer
from app.errors import FieldError, ValidationFailed
from app.messages.models import Message
from app.messages.schemas import MessageItem
from app.messages.variables import check_variables
from app.scenarios.service import ScenarioSpec
from app.timeutil import as_utc
from app.tracking.links import written_hosts
from channels.base import CONTACT_FIELD
from templates.renderer import TemplateError, render_channel


class Prepared(NamedTuple):  # a tuple: a batch makes 10,000 of them
    message: dict[str, Any]
    outbox: dict[str, Any]

    @property
    def id(self) -> str:
        message_id: str = self.message["id"]
        return message_id

    @property
    def immediate(self) -> bool:
        return self.outbox["enqueued_at"] is not None


_NOT_HASHED = {"idempotency_key", "scenario"}


def request_hash(scenario: str, item: MessageItem, *, as_sent: bool = False) -> str:
    """Fingerprint of a request, to tell a replay from a reuse of its idempotency key. Stored
    with the message: its definition must not change, or earlier messages stop replaying.
    ``send_at`` counts as the instant, in UTC, however the caller wrote its offset (a retry
    formatting times in UTC is a replay); ``as_sent``: with the offset written, as hashes
    were made before (messages stored then replay when retried with the same text)."""
    send_at = item.send_at
    if not as_sent and send_at is not None and send_at.utcoffset():
        item = item.model_copy(update={"send_at": as_utc(send_at)})
    # item.model_dump(mode="json", exclude=..., exclude_none=True) without its Python layer
    body = item.__pydantic_serializer__.to_python(
        item, mode="json", exclude=_NOT_HASHED, exclude_none=True
    )
    body["scenario"] = scenario
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _contacts(customer: StoredCustomer | None, item: MessageItem) -> dict[str, str]:
    contacts: dict[str, str] = {}
    if customer is not None:
        for name in CONTACT_FIELD.values():
            value = getattr(customer, name)
            if value:
                contacts[name] = value
    recipient = item.recipient
    if recipient is not None:  # attributes, not model_dump(): this runs for every message
        for name in CONTACT_FIELD.values():
            value = getattr(recipient, name)
            if value:
                contacts[name] = value
    return contacts


ChannelPlan = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]  # channels, (skipped, reason)


def _channel_plan(
    spec: ScenarioSpec, wanted: tuple[str, ...], present: frozenset[str]
) -> ChannelPlan:
    """The channels to try, in order, and those skipped for want of a contact point."""
    unknown = [c for c in wanted if c not in spec.channels]
    if unknown:
        raise ValidationFailed.field(
            "channels",
            f"scenario {spec.key!r} has no {', '.join(unknown)} channel; "
            f"it offers {', '.join(spec.channels)}",
        )
    reachable = tuple(c for c in wanted if CONTACT_FIELD[c] in present)
    if not reachable:
        needed = " or ".join(f"recipient.{CONTACT_FIELD[c]}" for c in wanted)
        raise ValidationFailed(
            f"no contact point for any channel of the message ({', '.join(wanted)}): give {needed}",
            fields=[FieldError(field="recipient", message=f"give {needed}")],
        )
    skipped = tuple(
        (c, f"no {CONTACT_FIELD[c]} for the customer") for c in wanted if c not in reachable
    )
    return reachable, skipped


def _consented(
    reachable: tuple[str, ...],
    skipped: tuple[tuple[str, str], ...],
    consent: Consent,
    purpose: str,
) -> ChannelPlan:
    """Only the channels the customer accepts messages of this class on (a transactional
    notice on the channels not opted out of; marketing where marketing consent holds)."""
    allowed = tuple(c for c in reachable if allows(consent, c, purpose))
    if not allowed:
        raise ValidationFailed.field(
            "customer_id",
            f"the customer accepts no {purpose} messages on {', '.join(reachable)} "
            "(consent withdrawn)",
        )
    refused = tuple((c, f"no {purpose} consent") for c in reachable if c not in allowed)
    return allowed, skipped + refused


def _render(
    spec: ScenarioSpec, channels: list[str], variables: dict[str, Any], timezone: str | None
) -> dict[str, Any]:
    content = {}
    marketing = spec.message_class == "marketing"
    for channel in channels:
        tpl = spec.templates.get(channel)
        if tpl is None:  # its template lost its published version: a stale scenario
            raise ValidationFailed.field(
                "channels", f"scenario {spec.key!r} has no published {channel} template"
            )
        try:
            content[channel] = render_channel(
                subject=tpl.subject,
                body=tpl.body,
                options=tpl.options,
                variables=variables,
                marketing=marketing,
                timezone=timezone,
            )
        except TemplateError as exc:
            raise ValidationFailed.field("variables", f"{channel} template: {exc}") from None
    return content


def _check_variables(spec: ScenarioSpec, variables: dict[str, Any]) -> None:
    errors = check_variables(spec.variables, variables)
    if errors:
        # a scenario and its template may declare one name with two types: one error each
        unique: dict[str, FieldError] = {}
        for error in errors:
            unique.setdefault(error.field, error)
        errors = list(unique.values())
        raise ValidationFailed("; ".join(f"{e.field}: {e.message}" for e in errors), fields=errors)


class Composer:
    """Prepares messages of one scenario. What depends only on the scenario, the channels asked
    for and which contact points a message has (its channel plan) is worked out once per
    combination, not once per message: a batch of 10,000 has a handful of them."""

    def __init__(self, spec: ScenarioSpec) -> None:
        self.spec = spec
        self._plans: dict[tuple[tuple[str, ...], frozenset[str]], ChannelPlan] = {}
        # whose links tracking may rewrite (app/tracking/links.py)
        self.link_hosts = written_hosts(
            [t.subject, t.body, t.options] for t in spec.templates.values()
        )

    def channel_plan(self, item: MessageItem, contacts: dict[str, str]) -> ChannelPlan:
        wanted = tuple(c.value for c in item.channels) if item.channels else self.spec.channels
        key = (wanted, frozenset(contacts))
        plan = self._plans.get(key)
        if plan is None:  # errors are not kept: they are rare, and raised anew each time
            plan = self._plans[key] = _channel_plan(self.spec, wanted, key[1])
        return plan

    def prepare(
        self,
        item: MessageItem,
        *,
        customer: StoredCustomer | None,
        owner: str,
        idempotency_key: str | None,
        now: datetime,
        message_id: str,
        consent: Consent | None = None,
    ) -> Prepared:
        """Validate against the scenario, choose channels, render; raise ValidationFailed."""
        spec = self.spec
        _check_variables(spec, item.variables)
        contacts = _contacts(customer, item)
        reachable, skipped = self.channel_plan(item, contacts)
        if consent is not None:
            reachable, skipped = _consented(reachable, skipped, consent, spec.message_class)
        channels = list(reachable)
        content = _render(
            spec, channels, item.variables, customer.timezone if customer is not None else None
        )
        send_at = as_utc(item.send_at) if item.send_at else None
        scheduled = send_at is not None and send_at > now
        decision = {
            "scenario_class": spec.message_class,
            "channels": channels,
            "skipped_channels": [{"channel": c, "reason": r} for c, r in skipped],
            "customer_known": customer is not None,
            # the template versions the content was rendered from
            "templates": {c: spec.template_refs[c] for c in channels},
            "strategy": None,
            "patch": None,
        }
        message = {
            "id": message_id,
            "owner": owner,
            "idempotency_key": idempotency_key,
            "request_hash": request_hash(spec.key, item) if idempotency_key else None,
            "scenario": spec.key,
            "customer_id": item.customer_id,
            "recipient": {CONTACT_FIELD[c]: contacts[CONTACT_FIELD[c]] for c in channels},
            "variables": item.variables,
            "channels": channels,
            "channel_index": 0,
            "channel": channels[0],
            "status": "scheduled" if scheduled else "queued",
            "attempts": 0,
            "channel_attempts": 0,
            "content": content,
            "unpatched": None,  # the content of patched channels without their patch
            "decision": decision,
            "patch": None,  # the strategy whose patch it carries (app/strategies/patching.py)
            "experiment_id": None,  # and its experiment variant (app/experiments/patching.py)
            "variant": None,
            "send_at": send_at,
            "next_attempt_at": send_at if scheduled else None,
            "created_at": now,
            "updated_at": now,
        }
        outbox = {
            "message_id": message_id,
            "due_at": send_at if send_at and scheduled else now,
            # immediate messages are enqueued right after commit; the sweeper finds them if not
            "enqueued_at": None if scheduled else now,
        }
        return Prepared(message=message, outbox=outbox)


def initial_events(message: Message) -> list[dict[str, Any]]:
    """The first two steps of every timeline, told by the message row itself (not stored:
    two rows fewer per message on the accept path)."""
    scheduled = message.send_at is not None and message.send_at > message.created_at
    second: dict[str, Any] = (
        {"type": "scheduled", "detail": {"send_at": message.send_at.isoformat()}}
        if scheduled and message.send_at is not None
        else {"type": "queued", "detail": {"channel": message.channels[0]}}
    )
    return [
        {"type": "accepted", "at": message.created_at, "detail": {"owner": message.owner}},
        {**second, "at": message.created_at},
    ]
