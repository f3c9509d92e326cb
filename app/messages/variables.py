"""Checks of send-time variables against a scenario's declared variables (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.errors import FieldError
from app.scenarios.schemas import VariableSpec, VariableType


def _is_decimal(value: Any) -> bool:
    if isinstance(value, bool | float):
        return False  # money travels as a decimal string, never a float
    if isinstance(value, int):
        return True
    if not isinstance(value, str):
        return False
    try:
        return Decimal(value).is_finite()
    except InvalidOperation:
        return False


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


_CHECKS: dict[VariableType, tuple[Any, str]] = {
    VariableType.string: (lambda v: isinstance(v, str), "a string"),
    VariableType.integer: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    VariableType.decimal: (_is_decimal, 'a decimal string such as "1200.00"'),
    VariableType.number: (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "a number",
    ),
    VariableType.boolean: (lambda v: isinstance(v, bool), "true or false"),
    VariableType.datetime: (_is_datetime, "an RFC 3339 date-time with an offset"),
    VariableType.date: (_is_date, "a date (YYYY-MM-DD)"),
}


def check_variables(specs: Iterable[VariableSpec], values: Mapping[str, Any]) -> list[FieldError]:
    """Every declared variable must be present and of its type."""
    errors = []
    for spec in specs:
        field = f"variables.{spec.name}"
        if spec.name not in values or values[spec.name] is None:
            errors.append(FieldError(field=field, message="required by the scenario"))
            continue
        check, expected = _CHECKS[spec.type]
        if not check(values[spec.name]):
            errors.append(FieldError(field=field, message=f"must be {expected}"))
    return errors
