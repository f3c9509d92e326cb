"""Declared customer attributes: the types, and how values are checked and stored (pure).

How each type is accepted (JSON API; a CSV cell is the text of the same) and stored in the
``customers.attributes`` JSON, which is what segment SQL compares:

- string: a string → JSON string.
- number: an integer, number or decimal string → JSON number with at most 15 significant
  digits (so it round-trips exactly through a double); integral values as JSON integers.
- integer: an integer or integer string → JSON integer (64-bit).
- boolean: true/false, or "true"/"false"/"1"/"0"/"yes"/"no" → JSON boolean.
- date: "YYYY-MM-DD" → JSON string "YYYY-MM-DD".
- datetime: RFC 3339 with an offset → JSON string "YYYY-MM-DDTHH:MM:SSZ" in UTC (whole
  seconds, so that text order is time order).
- string_list: a list of strings (CSV: items separated by ``|``) → JSON array of strings.

The API shows numbers as decimal strings ("1200000.5"), as it does all money.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# one list of types for profiles and segment rules
from strategies.attributes import AttributeType as AttributeType

ATTRIBUTE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
# the profile's own fields: a segment rule names them and attributes alike
RESERVED_NAMES = frozenset(
    {
        "id",
        "customer_id",
        "name",
        "phone",
        "email",
        "wechat_openid",
        "locale",
        "timezone",
        "tags",
        "attributes",
        "consent",
        "created_at",
        "updated_at",
    }
)
LIST_SEPARATOR = "|"
MAX_STRING = 1000
MAX_LIST_ITEMS = 100
MAX_LIST_ITEM = 200
MAX_DIGITS = 15  # a double holds 15 significant decimal digits exactly
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTEGER = re.compile(r"^[+-]?\d{1,19}$")
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})


class InvalidValue(ValueError):
    """A value that its declared type does not accept; the message says what would be."""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue("must be a string")
    if "\x00" in value:
        raise InvalidValue("must not contain NUL characters")
    if len(value) > MAX_STRING:
        raise InvalidValue(f"must be at most {MAX_STRING} characters long")
    return value


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidValue('must be a number or a decimal string such as "1200.00"')
    try:
        # a float is the double the client's JSON text parsed to; repr gives that text back
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise InvalidValue('must be a number or a decimal string such as "1200.00"') from None
    if not number.is_finite():
        raise InvalidValue("must be a finite number")
    digits = number.normalize().as_tuple().digits
    if len(digits) > MAX_DIGITS or abs(number) >= Decimal(10) ** MAX_DIGITS:
        raise InvalidValue(f"must have at most {MAX_DIGITS} significant digits and be below 10^15")
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def _integer(value: Any) -> int:
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue("must be an integer")
    if not -(2**63) <= value < 2**63:
        raise InvalidValue("must fit in 64 bits")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidValue("must be true or false (or 1/0, yes/no)")


def _date(value: Any) -> str:
    try:
        if isinstance(value, str) and _DATE.match(value.strip()):
            return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        pass
    raise InvalidValue("must be a date YYYY-MM-DD")


def _datetime(value: Any) -> str:
    parsed = None
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidValue(
            'must be an RFC 3339 date-time with an offset ("2026-01-31T09:30:00+08:00")'
        )
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise InvalidValue("must be a list of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise InvalidValue(f"must have at most {MAX_LIST_ITEMS} items")
    for item in value:
        if not isinstance(item, str) or "\x00" in item or len(item) > MAX_LIST_ITEM:
            raise InvalidValue(f"items must be strings of at most {MAX_LIST_ITEM} characters")
    return list(value)


_COERCE: dict[AttributeType, Callable[[Any], Any]] = {
    AttributeType.string: _text,
    AttributeType.number: _number,
    AttributeType.integer: _integer,
    AttributeType.boolean: _boolean,
    AttributeType.date: _date,
    AttributeType.datetime: _datetime,
    AttributeType.string_list: _string_list,
}


def coerce(type_: AttributeType, value: Any) -> Any:
    """The stored form of ``value`` (from JSON or a CSV cell); InvalidValue if it is not one."""
    return _COERCE[type_](value)


def coerce_cell(type_: AttributeType, cell: str) -> Any:
    """The stored form of a CSV cell (a list's items are separated by ``|``)."""
    if type_ is AttributeType.string_list:
        return _string_list([item.strip() for item in cell.split(LIST_SEPARATOR) if item.strip()])
    return _COERCE[type_](cell)


def check_attributes(
    schema: Mapping[str, AttributeType], values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The stored form of ``values`` and the (name, message) of each one refused. None
    values are left out (no value); undeclared names are refused."""
    stored: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for name, value in values.items():
        type_ = schema.get(name)
        if type_ is None:
            errors.append((name, "not a declared attribute (see /v1/customer-attributes)"))
        elif value is not None:
            try:
                stored[name] = coerce(type_, value)
            except InvalidValue as exc:
                errors.append((name, f"{exc} ({type_.value})"))
    return stored, errors


def shown(type_: AttributeType | None, value: Any) -> Any:
    """A stored value as the API shows it: numbers as decimal strings."""
    if (
        type_ is AttributeType.number
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return format(number, "f")
    return value
