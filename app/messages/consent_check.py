"""Marketing consent checked again when a message goes.

A send is decided at acceptance, with the consent of that moment. A customer may opt out of
marketing before it goes: a scheduled message, a retry, a fallback to the next channel, a
campaign message waiting for quiet hours to end. So, when a worker has claimed messages, those
that carry marketing (a marketing scenario's, or a transactional one with a marketing patch)
are checked again on the channel they go by, as acceptance checks them (recorded decisions,
and the opt-out replies from the number an SMS goes to):

- a marketing message is not sent on that channel (it falls back to the next one, or fails);
- a patched message goes without its patch (``messages.unpatched``).

A message accepted in the last ``RECHECK_AFTER`` seconds is not checked again: it was
decided on consent that fresh (an opt-out in those seconds is like one just after the send),
and most sends go at once, so they cost nothing here; neither do transactional messages
without a patch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy import select

from app.customers import repository as customers
from app.customers.consent import Purpose, allows
from app.ids import first_id_at
from app.messages.models import Message
from app.messages.outcomes import Claimed
from app.scenarios.models import Scenario
from app.strategies import patching
from app.strategies.patching import CACHE_SECONDS
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.delivery")

OPTED_OUT = "opted_out"  # the code of the refusal, on the timeline
UNCHECKED = "consent_check"  # the code of a send put off because consent could not be read
RECHECK_AFTER = 10.0  # seconds since acceptance


async def recheck(runtime: Runtime, messages: Sequence[Claimed]) -> list[Claimed]:
    """``messages``, those whose channel lost marketing consent since acceptance changed:
    a marketing one refused (``refusal``), a patched one with its content unpatched. If the
    check itself fails, the messages it had to check wait and try again (``unchecked``):
    better late than marketing sent against an opt-out; the others go."""
    # ids are time-sortable: those from before this bound were accepted longer ago
    bound = first_id_at("msg", int((time.time() - RECHECK_AFTER) * 1000))
    waited = [m for m in messages if m.id < bound and (m.scenario or m.patched)]
    if not waited:
        return list(messages)
    try:
        changed = await _changed(runtime, waited)
    except Exception:
        log.exception("consent could not be checked again", extra={"messages": len(waited)})
        changed = {m.id: replace(m, unchecked=True) for m in waited}
    return [changed.get(m.id, m) for m in messages]


async def _changed(runtime: Runtime, waited: list[Claimed]) -> dict[str, Claimed]:
    """The messages among ``waited`` that lost marketing consent, changed (by id)."""
    async with runtime.read_sessionmaker() as session:
        marketing = await _marketing_scenarios(runtime, session, {m.scenario for m in waited})
        checked = [m for m in waited if m.scenario in marketing or m.patched]
        if not checked:
            return {}
        ids = [m.customer_id for m in checked]
        patcher = await patching.load(
            session,
            scenarios=[],
            customer_ids=ids,
            settings=runtime.settings,
            now=utcnow(),
            phones={p for m in checked if (p := m.recipient.get("phone"))},
        )
        # their own numbers, whose later opt-in outweighs a reply: only if there are replies
        own = await customers.phones_of(session, ids) if patcher.sms_opt_outs else {}
        lost = [
            m
            for m in checked
            if not allows(
                patcher.consent(
                    m.customer_id, phone=m.recipient.get("phone"), own_phone=own.get(m.customer_id)
                ),
                _channel(m),
                Purpose.marketing,
            )
        ]
        unpatched = await _unpatched(session, [m.id for m in lost if m.scenario not in marketing])
    return {m.id: _without_marketing(m, m.scenario in marketing, unpatched.get(m.id)) for m in lost}


def _channel(message: Claimed) -> str:
    return message.channels[message.channel_index]


def _without_marketing(
    message: Claimed, marketing: bool, unpatched: dict[str, Any] | None
) -> Claimed:
    channel = _channel(message)
    if marketing:
        reason = f"the customer opted out of marketing on {channel} after it was accepted"
        return replace(message, refusal=reason)
    if unpatched is None or channel not in unpatched:
        return message  # no patch on this channel
    content = {**message.content, channel: unpatched[channel]}
    return replace(message, content=content, patch_dropped=True)


# runtime -> scenario -> (until, is marketing)
_classes: WeakKeyDictionary[Runtime, dict[str, tuple[float, bool]]] = WeakKeyDictionary()


async def _marketing_scenarios(runtime: Runtime, session: Any, keys: set[str]) -> set[str]:
    """Those of the scenarios that are marketing ones, known for ``CACHE_SECONDS`` (a slice
    of sends asks every time; a class changes rarely, and is seen that soon)."""
    now = time.monotonic()
    known = _classes.setdefault(runtime, {})
    unknown = sorted(k for k in keys if known.get(k, (0.0, False))[0] <= now)
    if unknown:
        rows = await session.execute(
            select(Scenario.key, Scenario.message_class).where(Scenario.key.in_(unknown))
        )
        found = dict(rows.all())
        for key in unknown:
            known[key] = (now + CACHE_SECONDS, found.get(key) == "marketing")
    return {k for k in keys if known[k][1]}


async def _unpatched(session: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    rows = await session.execute(select(Message.id, Message.unpatched).where(Message.id.in_(ids)))
    return {message_id: content for message_id, content in rows if content}
