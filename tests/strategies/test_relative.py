"""Relative dates in segment rules: validation, the canonical JSON, fixing them at a time (in
the bank's calendar for dates), and the predicate following the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from strategies.predicate import compile_predicate
from strategies.rules import InvalidRule, has_relative, resolve, to_json, validate
from tests.strategies.samples import SCHEMA

OPENED_LAST_90_DAYS = {"field": "birthday", "op": "gte", "value": {"days": -90}}
NO_LOGIN_FOR_30_DAYS = {"field": "last_login", "op": "lt", "value": {"days": -30}}


def test_relative_values_keep_their_json() -> None:
    raw = {
        "all": [
            OPENED_LAST_90_DAYS,
            NO_LOGIN_FOR_30_DAYS,
            {"field": "last_login", "op": "between", "value": [{"hours": -6}, {"days": 0}]},
            {"field": "birthday", "op": "in", "value": [{"days": 0}, "2024-02-29"]},
        ]
    }
    rule = validate(raw, SCHEMA)
    assert has_relative(rule)
    assert to_json(rule) == raw
    assert not has_relative(
        validate({"field": "birthday", "op": "gte", "value": "2024-01-01"}, SCHEMA)
    )


def test_dates_follow_the_banks_calendar_and_datetimes_the_instant() -> None:
    rule = validate({"all": [OPENED_LAST_90_DAYS, NO_LOGIN_FOR_30_DAYS]}, SCHEMA)
    # 17:30 UTC on 31 March is already 1 April in Shanghai
    fixed = to_json(resolve(rule, datetime(2024, 3, 31, 17, 30, 15, 999, tzinfo=UTC)))
    assert fixed == {
        "all": [
            {"field": "birthday", "op": "gte", "value": "2024-01-02"},  # 1 April - 90 days
            {"field": "last_login", "op": "lt", "value": "2024-03-01T17:30:15Z"},
        ]
    }
    assert resolve(fixed_rule := validate(fixed, SCHEMA), datetime.now(UTC)) is fixed_rule


def test_the_predicate_moves_with_the_clock() -> None:
    now = [datetime(2024, 5, 1, 15, 59, 59, tzinfo=UTC).timestamp()]  # 23:59:59 in Shanghai
    today = compile_predicate(
        validate({"field": "birthday", "op": "eq", "value": {"days": 0}}, SCHEMA),
        clock=lambda: now[0],
    )
    assert today({"birthday": "2024-05-01"})
    assert not today({"birthday": "2024-05-02"})
    now[0] += 1  # midnight in Shanghai
    assert today({"birthday": "2024-05-02"})
    assert not today({"birthday": "2024-05-01"})
    assert not today({})  # missing stays false


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"hours": 1}, "'birthday' is a date: unknown unit 'hours'; expected {\"days\": N}"),
        ({"day": 1}, "unknown unit 'day'"),
        ({"days": 1.5}, "days must be a whole number"),
        ({"days": True}, "days must be a whole number"),
        ({"days": "1"}, "days must be a whole number"),
        ({"days": 1, "hours": 2}, "with one key"),
        ({}, "with one key"),
        ({"days": 36_601}, "days must be within ±36600"),
    ],
)
def test_bad_relative_values_are_named(value: Any, message: str) -> None:
    with pytest.raises(InvalidRule) as raised:
        validate({"field": "birthday", "op": "gte", "value": value}, SCHEMA)
    assert raised.value.errors[0].field == "rule.value"
    assert message in raised.value.errors[0].message


def test_relative_values_are_for_dates_and_datetimes_only() -> None:
    with pytest.raises(InvalidRule, match="apply to dates and datetimes only"):
        validate({"field": "aum", "op": "gte", "value": {"days": 1}}, SCHEMA)
    hours = validate({"field": "last_login", "op": "gte", "value": {"hours": -876_000}}, SCHEMA)
    assert to_json(hours)["value"] == {"hours": -876_000}


def test_a_relative_range_must_not_be_reversed() -> None:
    with pytest.raises(InvalidRule, match=r"low \{'days': 1\} is above high \{'hours': 23\}"):
        validate(
            {"field": "last_login", "op": "between", "value": [{"days": 1}, {"hours": 23}]}, SCHEMA
        )
    # against a fixed date it depends on the day: accepted, and empty once reversed
    rule = validate(
        {"field": "birthday", "op": "between", "value": [{"days": 0}, "2024-06-01"]}, SCHEMA
    )
    match = compile_predicate(rule, clock=datetime(2024, 7, 1, tzinfo=UTC).timestamp)
    assert not match({"birthday": "2024-06-15"})
