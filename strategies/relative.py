"""Relative dates in segment rules: a date or time counted from when the rule is evaluated
(pure: the caller gives the time).

A marketer writes ``{"field": "opened_on", "op": "gte", "value": {"days": -90}}`` ("opened in
the last 90 days") or ``{"field": "last_login", "op": "lt", "value": {"days": -30}}`` ("no
login for 30 days") instead of a fixed date that would have to be edited every day.

- On a date attribute, ``{"days": N}`` is the bank's calendar day (today in
  :data:`~strategies.attributes.DEFAULT_TIMEZONE`) plus N days. Every customer is measured
  against the same day, so that the SQL (SQLite has no time zones) and the Python predicate
  agree.
- On a datetime attribute, ``{"days": N}`` and ``{"hours": N}`` are that long from now (whole
  seconds, as datetimes are stored).

A relative value resolves to the stored form of its attribute type (a date's or a datetime's
text), so that once resolved a rule is compared exactly as one written with fixed values.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from strategies.attributes import DEFAULT_TIMEZONE, AttributeType

MAX_DAYS = 36_600  # a hundred years either way
MAX_HOURS = MAX_DAYS * 24
_CALENDAR = ZoneInfo(DEFAULT_TIMEZONE)


class Unit(StrEnum):
    days = "days"
    hours = "hours"


_LIMITS = {Unit.days: MAX_DAYS, Unit.hours: MAX_HOURS}
UNITS_BY_TYPE = {
    AttributeType.date: (Unit.days,),
    AttributeType.datetime: (Unit.days, Unit.hours),
}


class Relative(BaseModel):
    """``amount`` ``unit`` from the time of evaluation (negative: before it)."""

    model_config = ConfigDict(frozen=True, strict=True)

    unit: Unit
    amount: int

    def to_json(self) -> dict[str, int]:
        return {self.unit.value: self.amount}

    def hours(self) -> int:
        """The offset in hours, to order two relative values."""
        return self.amount * 24 if self.unit is Unit.days else self.amount


def parse_relative(type_: AttributeType, value: dict[str, Any]) -> Relative:
    """``{"days": N}`` or ``{"hours": N}`` for an attribute of ``type_``; ValueError else."""
    units = UNITS_BY_TYPE.get(type_)
    if units is None:
        raise ValueError('relative values ({"days": N}) apply to dates and datetimes only')
    usage = " or ".join(f'{{"{u.value}": N}}' for u in units)
    if len(value) != 1:
        raise ValueError(f"expected a relative {type_.value} with one key, {usage}")
    [(key, amount)] = value.items()
    if key not in [u.value for u in units]:
        raise ValueError(f"unknown unit {str(key)[:16]!r}; expected {usage}")
    unit = Unit(key)
    if type(amount) is not int:
        raise ValueError(f"{unit.value} must be a whole number (negative: in the past)")
    if abs(amount) > _LIMITS[unit]:
        raise ValueError(f"{unit.value} must be within ±{_LIMITS[unit]}")
    return Relative(unit=unit, amount=amount)


def resolve(value: Relative, type_: AttributeType, now: datetime) -> str:
    """The stored form of ``value`` for an attribute of ``type_``, at ``now`` (aware). Past
    the calendar's ends (years 1 and 9999), the end: no stored value lies beyond it."""
    if type_ is AttributeType.date:
        return _shifted(_bank_day(now), value.amount).isoformat()
    offset = timedelta(**{value.unit.value: value.amount})
    try:
        moment = now.astimezone(UTC).replace(tzinfo=None) + offset
    except OverflowError:
        moment = datetime.max if value.amount > 0 else datetime.min
    return moment.replace(microsecond=0).isoformat() + "Z"


def _bank_day(now: datetime) -> date:
    try:
        return now.astimezone(_CALENDAR).date()
    except OverflowError:  # within hours of the calendar's ends
        return now.date()


def _shifted(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


MAX_ANNIVERSARY_SPAN = 366  # days in a window: a whole year, leap or not


def anniversary_ranges(low: Relative, high: Relative, now: datetime) -> tuple[str, ...]:
    """The window from ``low`` to ``high`` days after the bank's calendar day at ``now``,
    as ranges of month-days (``"MM-DD"``, both ends included, in text order), flattened:
    ``(from, to)``, or ``(from, "12-31", "01-01", to)`` across a new year. A date's
    anniversary falls in the window when its month-day is in one of them; a 29 February
    counts on the 28th in a year without one."""
    if high.amount - low.amount + 1 >= MAX_ANNIVERSARY_SPAN:
        return ("01-01", "12-31")
    today = _bank_day(now)
    first, last = _shifted(today, low.amount), _shifted(today, high.amount)
    start, end = first.strftime("%m-%d"), last.strftime("%m-%d")
    if end == "02-28" and not _leap(last.year):
        end = "02-29"  # (when the window goes on to 1 March, "02-29" lies within anyway)
    if start <= end:
        return (start, end)
    return (start, "12-31", "01-01", end)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
