"""Validated rules compiled to Python predicates, evaluated per message (pure, no I/O).

A profile is a mapping of attribute name → stored JSON value plus the built-in fields
(:func:`strategies.attributes.profile_of`). The semantics, which :mod:`strategies.sql`
reproduces in SQL exactly:

- A value is *known* when present and of its attribute's stored JSON type: a str for
  string/date/datetime, a finite int/float/Decimal (not a bool) for number/integer, a bool
  for boolean, a list for string_list. Anything else (absent, None, another type, NaN)
  is *missing*.
- Every condition is false on a missing value, whatever its operator: ``ne`` and
  ``not_in`` mean "known and different"; ``exists`` means "known".
- ``all``/``any``/``not`` are plain two-valued logic over these always-true-or-false
  conditions, so ``not`` of a condition on a missing value is true. (SQL's NULL logic would
  drop the customer instead; the SQL compiler makes each condition total to avoid that.)
- Numbers compare as exact decimals; a float is read as its shortest repr, i.e. as the
  decimal its JSON text carries. Strings compare by code point, case-sensitively;
  ``contains`` is a substring test on a string and an item test on a string_list.
  ``between`` includes both ends. ``anniversary`` compares a date's month and day
  (characters 6 to 10 of its stored text) with the ranges of month-days of its window.
- A relative date (``{"days": -30}``) is fixed at the time of the call, to the second
  (:func:`strategies.rules.resolve`), as the SQL fixes it when it is made.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from strategies.attributes import AttributeType
from strategies.rules import COMPARE, AllOf, Condition, NotOf, Op, Rule, has_relative, resolve

Predicate = Callable[[Mapping[str, Any]], bool]
"""True when the profile belongs to the segment."""


Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_EVALUATED_AT: ContextVar[int | None] = ContextVar("segments_evaluated_at", default=None)


class evaluated_at:
    """Predicates called inside fix their relative dates at ``moment`` (aware) instead of
    the current time: a scheduled send decides for its send time, explain and dry runs for
    their ``at``. (A class, not a generator: a batch enters it once per message.)"""

    __slots__ = ("_moment", "_token")

    def __init__(self, moment: datetime) -> None:
        self._moment = (moment - _EPOCH) // _SECOND  # exact, as the SQL truncates
        self._token: Token[int | None] | None = None

    def __enter__(self) -> None:
        self._token = _EVALUATED_AT.set(self._moment)

    def __exit__(self, *_: object) -> None:
        assert self._token is not None
        _EVALUATED_AT.reset(self._token)


def _current_time() -> float:
    moment = _EVALUATED_AT.get()
    return time.time() if moment is None else moment


def compile_predicate(rule: Rule, *, clock: Clock = _current_time) -> Predicate:
    """A predicate over profiles for a rule from :func:`strategies.rules.validate`;
    ``clock``: the time that fixes its relative dates, if it has any (default: the current
    time, or the moment of an enclosing :func:`evaluated_at`)."""
    if has_relative(rule):
        return _relative(rule, clock)
    return _compile(rule)


_RESOLVED_KEPT = 8  # seconds whose compiled rule is kept (a batch's few send times)


def _relative(rule: Rule, clock: Clock) -> Predicate:
    """Compiled again for each second it is called at: fixed to the second, its values
    change no faster (a segment's predicate is called for every message)."""
    compiled: dict[int, Predicate] = {}

    def predicate(profile: Mapping[str, Any]) -> bool:
        second = math.floor(clock())
        current = compiled.get(second)
        if current is None:
            current = _compile(resolve(rule, _EPOCH + second * _SECOND))
            if len(compiled) >= _RESOLVED_KEPT:
                del compiled[next(iter(compiled))]  # the oldest
            compiled[second] = current
        return current(profile)

    return predicate


def _compile(rule: Rule) -> Predicate:
    if isinstance(rule, Condition):
        return _condition(rule)
    if isinstance(rule, NotOf):
        inner = _compile(rule.rule)
        return lambda profile: not inner(profile)
    children = tuple(_compile(r) for r in rule.rules)  # AllOf or AnyOf
    return _all(children) if isinstance(rule, AllOf) else _any(children)


def _all(children: tuple[Predicate, ...]) -> Predicate:
    def predicate(profile: Mapping[str, Any]) -> bool:
        # a loop, not all(<generator>): this runs per message, and is ~3x faster
        for child in children:  # noqa: SIM110
            if not child(profile):
                return False
        return True

    return predicate


def _any(children: tuple[Predicate, ...]) -> Predicate:
    def predicate(profile: Mapping[str, Any]) -> bool:
        for child in children:  # noqa: SIM110
            if child(profile):
                return True
        return False

    return predicate


def _condition(condition: Condition) -> Predicate:
    field = condition.field
    if condition.type in _NUMERIC and condition.op in COMPARE:
        return _number_comparison(field, COMPARE[condition.op], condition.value)
    read = _READERS[condition.type]
    test = _test(condition)

    def predicate(profile: Mapping[str, Any]) -> bool:
        value = read(profile.get(field))
        return value is not None and test(value)

    return predicate


_NUMERIC = frozenset({AttributeType.number, AttributeType.integer})


def _number_comparison(field: str, compare: Callable[[Any, Any], Any], operand: Any) -> Predicate:
    """The commonest condition (``aum >= 500000``) without the generic reader and test:
    segments are evaluated for every message, several conditions each."""

    def predicate(profile: Mapping[str, Any]) -> bool:
        value = profile.get(field)
        if type(value) is not int:  # an int compares exactly as it is
            value = _number(value)
            if value is None:
                return False
        return bool(compare(value, operand))

    return predicate


def _test(condition: Condition) -> Callable[[Any], bool]:
    """The operator applied to a known value."""
    op, operand = condition.op, condition.value
    if op is Op.exists:
        return lambda _value: True
    if op is Op.in_ or op is Op.not_in:
        assert isinstance(operand, tuple)
        members = frozenset(operand)  # Decimal hashes like the equal int, so ints match
        if op is Op.in_:
            return members.__contains__
        return lambda value: value not in members
    if op is Op.between:
        assert isinstance(operand, tuple)
        low, high = operand
        return lambda value: bool(low <= value <= high)
    if op is Op.contains:
        return lambda value: operand in value  # substring of a str, item of a list
    if op is Op.anniversary:  # resolved: ranges of month-days ("MM-DD" of YYYY-MM-DD)
        assert isinstance(operand, tuple)
        if len(operand) == 2:
            start, end = operand
            return lambda value: bool(start <= value[5:10] <= end)
        start, last, first, end = operand  # across a new year
        return lambda value: bool(start <= value[5:10] <= last or first <= value[5:10] <= end)
    compare = COMPARE[op]
    return lambda value: bool(compare(value, operand))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> int | Decimal | None:
    if isinstance(value, bool):  # JSON true is not 1
        return None
    if isinstance(value, int):
        return value  # compares exactly with Decimal
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return None


def _boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _string_list(value: Any) -> list[Any] | tuple[Any, ...] | None:
    return value if isinstance(value, list | tuple) else None


_READERS: dict[AttributeType, Callable[[Any], Any]] = {
    AttributeType.string: _text,
    AttributeType.date: _text,
    AttributeType.datetime: _text,
    AttributeType.number: _number,
    AttributeType.integer: _number,
    AttributeType.boolean: _boolean,
    AttributeType.string_list: _string_list,
}
