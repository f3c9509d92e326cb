"""The Python predicate's semantics, missing values above all (the SQL must agree: see
test_equivalence)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from strategies.attributes import profile_of
from strategies.predicate import compile_predicate
from strategies.rules import validate
from tests.strategies import samples

MISSING: list[dict[str, Any]] = [
    {},
    {"tier": None},
    {"tier": 5},
    {"tier": ["vip"]},
    {"tier": {"vip": True}},
]


def matches(rule: dict[str, Any], attributes: dict[str, Any]) -> bool:
    predicate = compile_predicate(validate(rule, samples.SCHEMA))
    return predicate(profile_of(attributes, locale="zh-CN", timezone="Asia/Shanghai"))


@pytest.mark.parametrize("attributes", MISSING)
@pytest.mark.parametrize(
    "rule",
    [
        {"field": "tier", "op": "eq", "value": "vip"},
        {"field": "tier", "op": "ne", "value": "vip"},
        {"field": "tier", "op": "in", "value": ["vip"]},
        {"field": "tier", "op": "not_in", "value": ["vip"]},
        {"field": "tier", "op": "contains", "value": "v"},
        {"field": "tier", "op": "exists"},
    ],
)
def test_every_condition_on_a_missing_value_is_false_and_its_not_true(
    rule: dict[str, Any], attributes: dict[str, Any]
) -> None:
    assert not matches(rule, attributes)
    assert matches({"not": rule}, attributes)


def test_ne_means_known_and_different_while_not_eq_takes_the_missing_too() -> None:
    ne = {"field": "tier", "op": "ne", "value": "vip"}
    not_eq = {"not": {"field": "tier", "op": "eq", "value": "vip"}}
    assert [matches(ne, a) for a in ({"tier": "mass"}, {"tier": "vip"}, {})] == [
        True,
        False,
        False,
    ]
    assert [matches(not_eq, a) for a in ({"tier": "mass"}, {"tier": "vip"}, {})] == [
        True,
        False,
        True,
    ]


def test_the_issue_example() -> None:
    rule = {
        "all": [
            {"field": "aum", "op": "gte", "value": 500000},
            {"not": {"field": "tags", "op": "contains", "value": "staff"}},
        ]
    }
    assert matches(rule, {"aum": 1200000, "tags": ["vip"]})
    assert matches(rule, {"aum": 500000.0})  # no tags: not staff
    assert not matches(rule, {"aum": 1200000, "tags": ["staff"]})
    assert not matches(rule, {"aum": 499999.99, "tags": []})
    assert not matches(rule, {"aum": "1200000"})  # a string is no number: missing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, True),  # the float read as its JSON text, not its binary value
        (Decimal("0.10"), True),
        (0.30000000000000004, False),
        (True, False),  # JSON true is no number
        (float("nan"), False),
        (Decimal("NaN"), False),
    ],
)
def test_numbers_compare_as_the_decimals_their_json_carries(value: Any, expected: bool) -> None:
    assert matches({"field": "aum", "op": "eq", "value": "0.1"}, {"aum": value}) is expected


def test_numbers_in_a_list_match_across_int_float_and_decimal() -> None:
    rule = {"field": "aum", "op": "in", "value": [5, "0.5"]}
    assert [matches(rule, {"aum": v}) for v in (5, 5.0, Decimal("5.00"), 0.5, 6)] == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_between_includes_both_ends() -> None:
    rule = {"field": "birthday", "op": "between", "value": ["1990-01-01", "1999-12-31"]}
    assert [matches(rule, {"birthday": d}) for d in ("1990-01-01", "1999-12-31", "2000-01-01")] == [
        True,
        True,
        False,
    ]


def test_contains_is_a_substring_of_a_string_and_an_item_of_a_list() -> None:
    assert matches({"field": "branch", "op": "contains", "value": "上海"}, {"branch": "上海分行"})
    assert not matches({"field": "branch", "op": "contains", "value": "上海"}, {"branch": "北京"})
    tags = {"field": "tags", "op": "contains", "value": "staff"}
    assert matches(tags, {"tags": ["vip", "staff"]})
    assert not matches(tags, {"tags": ["staffer", "Staff"]})  # whole items, case-sensitive
    assert not matches(tags, {"tags": "staff"})  # a bare string is no list: missing
    assert not matches(tags, {"tags": [["staff"]]})
    assert matches({"field": "tags", "op": "exists"}, {"tags": []})


def test_builtin_fields_come_from_the_profile() -> None:
    rule = validate({"field": "locale", "op": "in", "value": ["zh-CN", "zh-HK"]}, samples.SCHEMA)
    predicate = compile_predicate(rule)
    assert predicate({"locale": "zh-HK"})
    assert not predicate({"locale": "en-US"})
    assert not predicate({})


def test_groups() -> None:
    high = {"field": "aum", "op": "gte", "value": 500000}
    payroll = {"field": "payroll", "op": "eq", "value": True}
    assert matches({"any": [high, payroll]}, {"payroll": True})
    assert not matches({"all": [high, payroll]}, {"payroll": True})
    assert matches({"not": {"not": payroll}}, {"payroll": True})
