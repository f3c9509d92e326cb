"""Rule validation: normalized output, and 422 field errors named by JSON path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings

from app.errors import ValidationFailed
from strategies.attributes import AttributeType
from strategies.rules import (
    MAX_DEPTH,
    MAX_ERRORS,
    MAX_NODES,
    AllOf,
    AnyOf,
    Condition,
    InvalidRule,
    NotOf,
    Op,
    fields_of,
    to_json,
    validate,
)
from tests.strategies import samples

SCHEMA = samples.SCHEMA
EXAMPLE = {
    "all": [
        {"field": "aum", "op": "gte", "value": 500000},
        {"not": {"field": "tags", "op": "contains", "value": "staff"}},
    ]
}


def errors(rule: Any) -> dict[str, str]:
    with pytest.raises(InvalidRule) as caught:
        validate(rule, SCHEMA)
    return {e.field: e.message for e in caught.value.errors}


def test_the_issue_example_validates_to_a_typed_tree() -> None:
    rule = validate(EXAMPLE, SCHEMA)
    assert rule == AllOf(
        rules=(
            Condition(field="aum", op=Op.gte, value=Decimal(500000), type=AttributeType.number),
            NotOf(
                rule=Condition(
                    field="tags", op=Op.contains, value="staff", type=AttributeType.string_list
                )
            ),
        )
    )
    assert to_json(rule) == EXAMPLE
    assert fields_of(rule) == {"aum", "tags"}


def test_values_are_normalized() -> None:
    rule = validate(
        {
            "any": [
                {"field": "aum", "op": "between", "value": ["1200.50", 5000.25]},
                {"field": "last_login", "op": "gte", "value": "2024-05-01T08:00:00.9+08:00"},
                {"field": "tier", "op": "in", "value": ["vip", "private", "vip"]},
                {"field": "age", "op": "eq", "value": 30.0},
                {"field": "locale", "op": "eq", "value": "zh-CN"},
                {"field": "payroll", "op": "exists"},
            ]
        },
        SCHEMA,
    )
    assert to_json(rule) == {
        "any": [
            {"field": "aum", "op": "between", "value": [1200.5, 5000.25]},
            {"field": "last_login", "op": "gte", "value": "2024-05-01T00:00:00Z"},
            {"field": "tier", "op": "in", "value": ["vip", "private"]},
            {"field": "age", "op": "eq", "value": 30},
            {"field": "locale", "op": "eq", "value": "zh-CN"},
            {"field": "payroll", "op": "exists"},
        ]
    }
    assert isinstance(rule, AnyOf)
    locale = rule.rules[4]
    assert isinstance(locale, Condition)
    assert locale.builtin


@settings(max_examples=200, deadline=None)
@given(raw=samples.rules)
def test_canonical_json_validates_back_to_the_same_rule(raw: dict[str, Any]) -> None:
    rule = validate(raw, SCHEMA)
    assert validate(to_json(rule), SCHEMA) == rule


def test_errors_name_each_field_by_json_path() -> None:
    found = errors(
        {
            "all": [
                {"field": "aum", "op": "gte", "value": "lots"},
                {"not": {"field": "tagz", "op": "contains", "value": "staff"}},
                {"field": "tags", "op": "gte", "value": 1},
                {"field": "aum", "op": "between", "value": [500, 100]},
                {"field": "tier", "op": "in", "value": []},
                {"any": [{"field": "age", "op": "eq", "value": 1.5}]},
            ]
        }
    )
    assert found == {
        "rule.all[0].value": "'aum' is a number: expected a number, got the string 'lots'",
        "rule.all[1].not.field": "unknown attribute 'tagz'; did you mean 'tags'?",
        "rule.all[2].op": (
            "'gte' does not apply to string_list attribute 'tags'; use one of contains, exists"
        ),
        "rule.all[3].value": "low 500 is above high 100",
        "rule.all[4].value": "expected a list of 1 to 500 values",
        "rule.all[5].any[0].value": "'age' is an integer: expected an integer, got 1.5",
    }


def test_invalid_rule_is_a_422_listing_every_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate({"field": "nope", "op": "eq", "value": 1}, SCHEMA)
    body = caught.value.body()
    assert caught.value.status_code == 422
    assert body == {
        "error": "ValidationError",
        "detail": "rule.field: unknown attribute 'nope'",
        "fields": [{"field": "rule.field", "message": "unknown attribute 'nope'"}],
    }


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        (["aum"], "rule", "expected a rule object"),
        ({}, "rule", "expected exactly one kind of rule"),
        ({"all": [], "field": "aum"}, "rule", "found 'all', 'field'"),
        ({"all": []}, "rule.all", "expected a non-empty list of rules"),
        ({"any": {"field": "aum"}}, "rule.any", "expected a non-empty list of rules"),
        ({"field": "aum", "op": "gte", "vaule": 1}, "rule.vaule", "unknown key"),
        ({"field": 3, "op": "eq", "value": 1}, "rule.field", "expected an attribute name"),
        ({"field": "aum", "op": "like", "value": 1}, "rule.op", "unknown operator 'like'"),
        ({"field": "aum", "op": "gte"}, "rule.value", "required by 'gte'"),
        ({"field": "aum", "op": "exists", "value": True}, "rule.value", "exists takes no value"),
        ({"field": "aum", "op": "eq", "value": True}, "rule.value", "got a boolean"),
        ({"field": "aum", "op": "eq", "value": "1e5"}, "rule.value", "got the string '1e5'"),
        ({"field": "aum", "op": "eq", "value": 10**15}, "rule.value", "below 10^15"),
        ({"field": "aum", "op": "eq", "value": "0.1234567890123456"}, "rule.value", "15 sig"),
        ({"field": "aum", "op": "eq", "value": 1e-16}, "rule.value", "15 decimal places"),
        ({"field": "aum", "op": "between", "value": [1]}, "rule.value", "[low, high]"),
        ({"field": "aum", "op": "in", "value": [1, "x"]}, "rule.value[1]", "expected a number"),
        ({"field": "tier", "op": "gt", "value": "m"}, "rule.op", "'gt' does not apply"),
        ({"field": "tier", "op": "eq", "value": 5}, "rule.value", "expected a string"),
        ({"field": "tier", "op": "eq", "value": "a\x00"}, "rule.value", "NUL"),
        ({"field": "tier", "op": "eq", "value": "x" * 1001}, "rule.value", "1000 characters"),
        ({"field": "tier", "op": "contains", "value": ""}, "rule.value", "non-empty string"),
        ({"field": "tags", "op": "contains", "value": ["a"]}, "rule.value", "expected a str"),
        ({"field": "payroll", "op": "eq", "value": "yes"}, "rule.value", "true or false"),
        ({"field": "payroll", "op": "in", "value": [True]}, "rule.op", "use one of eq, ne"),
        ({"field": "birthday", "op": "eq", "value": "2024-02-30"}, "rule.value", "calendar"),
        ({"field": "birthday", "op": "eq", "value": "20240101"}, "rule.value", "YYYY-MM-DD"),
        ({"field": "last_login", "op": "gt", "value": "2024-01-01"}, "rule.value", "RFC 3339"),
        ({"field": "last_login", "op": "gt", "value": "2024-01-01T08:00"}, "rule.value", "offset"),
        ({"field": "locale", "op": "gt", "value": "zh"}, "rule.op", "does not apply"),
    ],
)
def test_each_mistake_gets_a_clear_message(rule: Any, field: str, message: str) -> None:
    found = errors(rule)
    assert field in found, found
    assert message in found[field]


def test_every_error_is_reported_up_to_a_limit() -> None:
    bad = {"field": "nope", "op": "eq", "value": 1}
    assert len(errors({"any": [bad] * 3})) == 3
    with pytest.raises(InvalidRule) as caught:
        validate({"any": [bad] * 150}, SCHEMA)
    assert len(caught.value.errors) == MAX_ERRORS
    assert "(and 45 more)" in caught.value.detail


def test_depth_is_bounded_without_recursing_into_the_excess() -> None:
    leaf: dict[str, Any] = {"field": "aum", "op": "exists"}
    rule = leaf
    for _ in range(MAX_DEPTH - 1):
        rule = {"not": rule}
    validate(rule, SCHEMA)
    for _ in range(100_000):  # far deeper than Python's recursion limit
        rule = {"not": rule}
    found = errors(rule)
    assert found == {"rule" + ".not" * MAX_DEPTH: "nested more than 10 levels deep"}


def test_size_is_bounded_without_walking_the_rest() -> None:
    leaf = {"field": "aum", "op": "exists"}
    validate({"any": [leaf] * (MAX_NODES - 1)}, SCHEMA)
    found = errors({"any": [leaf] * 1_000_000})
    assert found == {"rule": f"more than {MAX_NODES} conditions and groups; simplify it"}


def test_values_in_lists_are_bounded() -> None:
    assert "rule.value" in errors({"field": "age", "op": "in", "value": list(range(501))})
    many = {"field": "age", "op": "in", "value": list(range(500))}
    found = errors({"any": [many] * 5})
    assert found == {"rule.any[4].value": "the rule lists more than 2000 values in all"}


def test_root_names_the_payload_field() -> None:
    with pytest.raises(InvalidRule) as caught:
        validate({"not": {"field": "x", "op": "exists"}}, SCHEMA, root="body.rule")
    assert caught.value.errors[0].field == "body.rule.not.field"
