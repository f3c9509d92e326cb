"""The attribute schema and the stored form of each type."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given

from strategies.attributes import (
    BUILTINS,
    AttributeSchema,
    AttributeType,
    coerce_value,
    parse_number,
    profile_of,
)
from tests.strategies import samples

T = AttributeType


def test_schema_holds_declared_attributes_and_builtins() -> None:
    schema = AttributeSchema({"aum": "number", "tags": T.string_list})
    assert set(schema) == {"aum", "tags", *BUILTINS}
    assert schema["aum"].type is T.number
    assert not schema["aum"].builtin
    assert schema["locale"].builtin
    assert schema.declared() == {"aum": T.number, "tags": T.string_list}


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"locale": "string"}, "built-in"),
        ({"资产": "number"}, "letters, digits and _"),
        ({"a.b": "number"}, "letters, digits and _"),
        ({"x" * 65: "number"}, "letters, digits and _"),
        ({"aum": "money"}, "'money' is not a valid AttributeType"),
    ],
)
def test_schema_refuses_bad_declarations(declared: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttributeSchema(declared)


@pytest.mark.parametrize(
    ("type_", "value", "stored"),
    [
        (T.number, "1200.00", 1200),
        (T.number, 500000, 500000),
        (T.number, "0.1", 0.1),
        (T.number, Decimal("12345678901234.5"), 12345678901234.5),
        (T.number, "-0.000001", -0.000001),
        (T.integer, 30.0, 30),
        (T.integer, "-7", -7),
        (T.boolean, False, False),
        (T.string, "上海分行", "上海分行"),
        (T.date, "2024-02-29", "2024-02-29"),
        (T.datetime, "2024-05-01T08:00:00.999+08:00", "2024-05-01T00:00:00Z"),
        (T.datetime, "2024-05-01 00:00:00Z", "2024-05-01T00:00:00Z"),
        (T.datetime, "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        (T.string_list, ["vip", "理财", "vip"], ["vip", "理财"]),
        (T.string_list, [], []),
    ],
)
def test_values_are_coerced_to_their_stored_form(
    type_: AttributeType, value: Any, stored: Any
) -> None:
    result = coerce_value(type_, value)
    assert result == stored
    assert type(result) is type(stored)


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        (T.number, "1,200.00", "expected a number"),
        (T.number, True, "got a boolean"),
        (T.number, float("inf"), "finite"),
        (T.number, "NaN", "expected a number"),
        (T.number, 2**60, r"below 10\^15"),
        (T.number, "1234567890.1234567", "significant digits"),
        (T.integer, "1.5", "expected an integer"),
        (T.boolean, "true", "true or false"),
        (T.string, None, "got null"),
        (T.string, "a\x00b", "NUL"),
        (T.date, "2024-13-01", "calendar date"),
        (T.datetime, "2024-05-01T08:00:00", "UTC offset"),
        (T.datetime, "tomorrow", "RFC 3339"),
        (T.string_list, "vip", "list of strings"),
        (T.string_list, ["vip", 1], "expected a string, got a number"),
    ],
)
def test_bad_values_are_refused_with_a_reason(
    type_: AttributeType, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        coerce_value(type_, value)


@given(number=samples.decimals)
def test_stored_numbers_read_back_as_the_same_decimal(number: Decimal) -> None:
    """The domain bound at work: the JSON text of the stored number is the decimal."""
    stored = coerce_value(T.number, number)
    assert parse_number(orjson.loads(orjson.dumps(stored))) == number
    assert Decimal(orjson.dumps(stored).decode()) == number


def test_profile_reads_builtins_from_their_columns() -> None:
    profile = profile_of({"aum": 1, "locale": "stray"}, locale="zh-CN", timezone="UTC")
    assert profile == {"aum": 1, "locale": "zh-CN", "timezone": "UTC"}
