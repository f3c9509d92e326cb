"""Time helpers: everything is stored and compared in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _in_range(value: datetime) -> datetime:
    # far from the calendar's ends, where converting to UTC, time zones and relative dates
    # would overflow
    if not 1970 <= value.year <= 9998:
        raise ValueError("must be between 1970 and 9998")
    return value


ApiTime = Annotated[AwareDatetime, AfterValidator(_in_range)]
"""A time the API takes (RFC 3339 with an offset), within years 1970-9998."""
