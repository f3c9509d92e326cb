"""Turn one validated request into the rows to insert (pure: no I/O)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from app.customers.models import Customer
from app.errors import FieldError, ValidationFailed
from app.ids import new_id
from app.messages.models import Message
from app.messages.schemas import MessageItem
from app.messages.variables import check_variables
from app.scenarios.service import ScenarioSpec
from app.timeutil import as_utc
from channels.base import CONTACT_FIELD
from templates.renderer import TemplateError, render_channel


@dataclass(frozen=True)
class Prepared:
    message: dict[str, Any]
    outbox: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.message["id"])

    @property
    def immediate(self) -> bool:
        return self.outbox["enqueued_at"] is not None


def request_hash(scenario: str, item: MessageItem) -> str:
    """Fingerprint of a request, to tell a replay from a reuse of its idempotency key."""
    body = item.model_dump(mode="json", exclude={"idempotency_key", "scenario"}, exclude_none=True)
    body["scenario"] = scenario
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _contacts(customer: Customer | None, item: MessageItem) -> dict[str, str]:
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


def _channel_plan(
    spec: ScenarioSpec, item: MessageItem, contacts: dict[str, str]
) -> tuple[list[str], list[dict[str, str]]]:
    wanted = [c.value for c in item.channels] if item.channels else list(spec.channels)
    unknown = [c for c in wanted if c not in spec.channels]
    if unknown:
        raise ValidationFailed.field(
            "channels",
            f"scenario {spec.key!r} has no {', '.join(unknown)} channel; "
            f"it offers {', '.join(spec.channels)}",
        )
    reachable = [c for c in wanted if contacts.get(CONTACT_FIELD[c])]
    skipped = [
        {"channel": c, "reason": f"no {CONTACT_FIELD[c]} for the customer"}
        for c in wanted
        if c not in reachable
    ]
    if not reachable:
        needed = " or ".join(f"recipient.{CONTACT_FIELD[c]}" for c in wanted)
        raise ValidationFailed(
            f"no contact point for any channel of the message ({', '.join(wanted)}): give {needed}",
            fields=[FieldError(field="recipient", message=f"give {needed}")],
        )
    return reachable, skipped


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


def prepare(
    spec: ScenarioSpec,
    item: MessageItem,
    *,
    customer: Customer | None,
    owner: str,
    idempotency_key: str | None,
    now: datetime,
) -> Prepared:
    """Validate against the scenario, choose channels, render; raise ValidationFailed."""
    _check_variables(spec, item.variables)
    contacts = _contacts(customer, item)
    channels, skipped = _channel_plan(spec, item, contacts)
    content = _render(
        spec, channels, item.variables, customer.timezone if customer is not None else None
    )
    message_id = new_id("msg")
    send_at = as_utc(item.send_at) if item.send_at else None
    scheduled = send_at is not None and send_at > now
    status = "scheduled" if scheduled else "queued"
    decision = {
        "scenario_class": spec.message_class,
        "channels": channels,
        "skipped_channels": skipped,
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
        "status": status,
        "attempts": 0,
        "channel_attempts": 0,
        "content": content,
        "decision": decision,
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
