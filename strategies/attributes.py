"""The declared attribute schema that segment rules are checked against, and the stored form
of each attribute type.

Customer attributes live in the ``attributes`` JSON column of ``customers``; a few built-in
fields (``locale``, ``timezone``) are columns of their own and usable in rules too. Rules
compile both to Python and to SQL, so every type has ONE stored JSON form that the three
evaluators (Python, SQLite, PostgreSQL) read and compare the same way:

- string: a JSON string, compared as exact text (code points, case-sensitive).
- number, integer: a JSON number, compared as an exact decimal (integer only adds that
  rule values and written values must be integral).
- boolean: true or false.
- date: ``"YYYY-MM-DD"``; datetime: ``"YYYY-MM-DDTHH:MM:SSZ"`` (UTC, whole seconds). Both
  compare as text, which for these fixed-width forms is chronological order.
- string_list: a JSON array of strings.

A value whose JSON type is not the declared one (a string where a number is declared, a
JSON null) counts as *missing* everywhere. :func:`coerce_value` turns API input into the
stored form.

The number domain: rule values, and values written through :func:`coerce_value`, have at
most 15 significant digits and 15 decimal places and stay below 10^15 in magnitude (money
up to 9,999,999,999,999.99 fits). 15 digits is DBL_DIG: such a decimal survives the trip
through an IEEE double, so SQLite, whose JSON numbers are doubles (or 64-bit ints), orders
them exactly as Python and PostgreSQL do with decimals. Stored floats outside the domain
agree too, as long as their JSON text is the float's shortest repr (what orjson writes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

# The bank's time zone: a customer's when none is stored, and the calendar of relative dates
# in segment rules (strategies.relative)
DEFAULT_TIMEZONE = "Asia/Shanghai"


class AttributeType(StrEnum):
    string = "string"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    date = "date"
    datetime = "datetime"
    string_list = "string_list"


NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# the number domain (module docstring)
MAX_SIGNIFICANT_DIGITS = 15
MAX_DECIMAL_PLACES = 15
NUMBER_LIMIT = Decimal(10) ** 15
MAX_STRING_LENGTH = 1000
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}.{0,40}")


@dataclass(frozen=True)
class Attribute:
    """One field usable in rules. ``builtin`` fields are columns of ``customers``, the
    others keys of its ``attributes`` JSON column."""

    name: str
    type: AttributeType
    builtin: bool = False


BUILTINS: Mapping[str, Attribute] = {
    "locale": Attribute("locale", AttributeType.string, builtin=True),
    "timezone": Attribute("timezone", AttributeType.string, builtin=True),
}


class AttributeSchema(Mapping[str, Attribute]):
    """The declared attributes (name → type) plus the built-in fields.

    Raises ``ValueError`` for a name that is not an identifier of at most 64 characters,
    that shadows a built-in field, or an unknown type.
    """

    def __init__(self, declared: Mapping[str, AttributeType | str]) -> None:
        fields = dict(BUILTINS)
        for name, type_ in declared.items():
            if not NAME_PATTERN.fullmatch(name):
                raise ValueError(f"attribute name {name!r}: letters, digits and _ (max 64)")
            if name in BUILTINS:
                raise ValueError(f"attribute name {name!r} is a built-in customer field")
            fields[name] = Attribute(name, AttributeType(type_))
        self._fields = fields

    def __getitem__(self, name: str) -> Attribute:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def declared(self) -> dict[str, AttributeType]:
        """The declared (non built-in) attributes, as given."""
        return {a.name: a.type for a in self._fields.values() if not a.builtin}


def profile_of(attributes: Mapping[str, Any], **builtins: Any) -> dict[str, Any]:
    """The dict a compiled predicate reads: a customer's stored attributes plus its built-in
    fields (e.g. ``locale=customer.locale``); built-ins win over same-named attributes, as
    the SQL reads them from their columns."""
    return {**attributes, **builtins}


def parse_number(value: Any, *, integer: bool = False) -> Decimal:
    """A JSON number or decimal string (``500000``, ``0.035``, ``"1200.00"``) as an exact
    Decimal inside the number domain; ``ValueError`` with a reason otherwise. A float is
    read as its shortest repr, which is the text JSON carries."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise ValueError(f"expected a number, got {_json_kind(value)}")
    if isinstance(value, str) and (len(value) > 40 or not _DECIMAL_TEXT.fullmatch(value)):
        raise ValueError(f"expected a number, got the string {value[:40]!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite number")
    if isinstance(value, int) and abs(value) >= NUMBER_LIMIT:  # before any huge conversion
        raise ValueError("numbers must be below 10^15 in magnitude")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:  # pragma: no cover - the checks above admit decimals only
        raise ValueError("expected a number") from None
    _check_domain(number)
    if integer and number != number.to_integral_value():
        raise ValueError(f"expected an integer, got {number}")
    return number


def _check_domain(number: Decimal) -> None:
    if not number.is_finite():
        raise ValueError("expected a finite number")
    if abs(number) >= NUMBER_LIMIT:
        raise ValueError("numbers must be below 10^15 in magnitude")
    digits = number.normalize().as_tuple()
    exponent = int(digits.exponent)
    if len(digits.digits) > MAX_SIGNIFICANT_DIGITS and number != 0:
        raise ValueError(f"at most {MAX_SIGNIFICANT_DIGITS} significant digits")
    if -exponent > MAX_DECIMAL_PLACES:
        raise ValueError(f"at most {MAX_DECIMAL_PLACES} decimal places")


def parse_date(value: Any) -> str:
    """An ISO date ``YYYY-MM-DD`` (checked for validity) in its stored form."""
    if not isinstance(value, str) or not _DATE_TEXT.fullmatch(value):
        raise ValueError(f"expected a date as YYYY-MM-DD, got {_describe(value)}")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{value!r} is not a calendar date") from None


def parse_datetime(value: Any) -> str:
    """An RFC 3339 time with an offset, stored as UTC ``YYYY-MM-DDTHH:MM:SSZ`` (seconds
    truncated: a fixed width keeps text order chronological)."""
    if not isinstance(value, str) or not _DATETIME_TEXT.fullmatch(value):
        raise ValueError(
            f"expected an RFC 3339 time such as 2024-05-01T08:00:00+08:00, got {_describe(value)}"
        )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} needs a UTC offset (Z or +08:00)")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range") from None
    return utc.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_json_kind(value)}")
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")  # PostgreSQL cannot store them
    return value


def coerce_value(type_: AttributeType, value: Any) -> Any:
    """API input → the stored JSON form of ``type_`` (see the module docstring), or
    ``ValueError`` saying what is wrong. Numbers are stored as JSON numbers: an int when
    integral, else the float whose shortest repr is the decimal (exact in the domain)."""
    if type_ in (AttributeType.number, AttributeType.integer):
        return json_number(parse_number(value, integer=type_ is AttributeType.integer))
    if type_ is AttributeType.boolean:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_json_kind(value)}")
        return value
    if type_ is AttributeType.date:
        return parse_date(value)
    if type_ is AttributeType.datetime:
        return parse_datetime(value)
    if type_ is AttributeType.string_list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of strings, got {_json_kind(value)}")
        return list(dict.fromkeys(parse_string(item) for item in value))
    return parse_string(value)


def json_number(number: Decimal) -> int | float:
    """A domain Decimal as the JSON number that reads back as the same decimal."""
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _describe(value: Any) -> str:
    return f"the string {value[:40]!r}" if isinstance(value, str) else _json_kind(value)
