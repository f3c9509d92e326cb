"""Consent per channel and purpose (pure): explicit decisions over the defaults.

Defaults, when a customer has no decision recorded for a channel and purpose:

- **transactional**: granted. Account notices are part of the service contract; a customer
  who wants none on a channel opts out of that channel explicitly.
- **marketing**: the setting ``customers.marketing_consent_default``
  (``ICC_CUSTOMERS__MARKETING_CONSENT_DEFAULT``), ``granted`` by default: banks in China
  collect marketing consent in the account-opening agreement and honour opt-outs (the "TD"
  reply). A bank that collects consent separately sets it to ``denied`` and records
  opt-ins (POST /v1/customers/{id}/opt-in).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

CHANNELS = ("sms", "email", "wechat")


class Purpose(StrEnum):
    transactional = "transactional"
    marketing = "marketing"


@dataclass(frozen=True)
class Decision:
    granted: bool
    source: str  # "default" when nothing was recorded
    updated_at: datetime | None


Consent = dict[str, dict[str, Decision]]  # channel -> purpose -> decision


def default_decision(purpose: Purpose, *, marketing_granted: bool) -> Decision:
    granted = True if purpose is Purpose.transactional else marketing_granted
    return Decision(granted=granted, source="default", updated_at=None)


def consent_state(
    recorded: Iterable[tuple[str, str, bool, str, datetime]], *, marketing_granted: bool
) -> Consent:
    """Every channel × purpose: the recorded (channel, purpose, granted, source, at)
    decision, or the default."""
    state: Consent = {
        channel: {
            p.value: default_decision(p, marketing_granted=marketing_granted) for p in Purpose
        }
        for channel in CHANNELS
    }
    for channel, purpose, granted, source, at in recorded:
        if channel in state and purpose in state[channel]:
            state[channel][purpose] = Decision(granted=granted, source=source, updated_at=at)
    return state


def allows(state: Consent, channel: str, purpose: Purpose | str) -> bool:
    """Whether the customer may get a message of ``purpose`` on ``channel``."""
    return state[channel][Purpose(purpose).value].granted
