"""Relative dates in segment rules: validation, the canonical JSON, fixing them at a time (in
the bank's calendar for dates), and the predicate following the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from strategies.predicate import compile_predicate, evaluated_at
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


BIRTHDAY_THIS_WEEK = {"field": "birthday", "op": "anniversary", "value": [{"days": 0}, {"days": 6}]}


def test_an_anniversary_is_a_month_and_day_in_a_window_from_today() -> None:
    rule = validate(BIRTHDAY_THIS_WEEK, SCHEMA)
    assert to_json(rule) == BIRTHDAY_THIS_WEEK
    new_year = datetime(2024, 12, 28, 16, 0, tzinfo=UTC)  # 29 December in Shanghai
    # ranges of month-days: to the year's end, and from the new year's start
    assert to_json(resolve(rule, new_year))["value"] == ["12-29", "12-31", "01-01", "01-04"]
    week = compile_predicate(rule, clock=new_year.timestamp)
    assert week({"birthday": "1985-01-04"})
    assert week({"birthday": "2000-12-29"})
    assert not week({"birthday": "1985-01-05"})
    assert not week({"birthday": "1985-12-28"})


def test_a_29_february_counts_on_the_28th_without_a_leap_day() -> None:
    today = validate(
        {"field": "birthday", "op": "anniversary", "value": [{"days": 0}, {"days": 0}]}, SCHEMA
    )
    plain = datetime(2023, 2, 28, 4, tzinfo=UTC)
    leap = datetime(2024, 2, 28, 4, tzinfo=UTC)
    assert to_json(resolve(today, plain))["value"] == ["02-28", "02-29"]
    assert to_json(resolve(today, leap))["value"] == ["02-28", "02-28"]
    assert compile_predicate(today, clock=plain.timestamp)({"birthday": "1992-02-29"})
    assert not compile_predicate(today, clock=leap.timestamp)({"birthday": "1992-02-29"})


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ([0, 6], "rule.value[0]", 'expected [{"days": from}, {"days": to}]'),
        ([{"days": 6}, {"days": 0}], "rule.value", "a window runs forward"),
        ([{"days": 0}, {"days": 366}], "rule.value", "over at most 366 days"),
        ([{"days": 0}], "rule.value", 'expected [{"days": from}, {"days": to}]'),
        ([{"days": 0}, {"hours": 2}], "rule.value[1]", "unknown unit 'hours'"),
    ],
)
def test_bad_anniversary_windows_are_named(value: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidRule) as raised:
        validate({"field": "birthday", "op": "anniversary", "value": value}, SCHEMA)
    assert raised.value.errors[0].field == field
    assert message in raised.value.errors[0].message
    with pytest.raises(InvalidRule, match="'anniversary' does not apply to datetime"):
        validate({"field": "last_login", "op": "anniversary", "value": [{"days": 0}] * 2}, SCHEMA)


@pytest.mark.parametrize(
    ("now", "window", "expected"),
    [
        (datetime(2023, 2, 20, tzinfo=UTC), (0, 10), ["02-20", "03-02"]),  # 02-29 within
        (datetime(2024, 2, 20, tzinfo=UTC), (0, 9), ["02-20", "02-29"]),
        (datetime(2024, 1, 1, tzinfo=UTC), (0, 364), ["01-01", "12-30"]),  # leap: not 12-31
        (datetime(2023, 1, 2, tzinfo=UTC), (0, 364), ["01-02", "12-31", "01-01", "01-01"]),
        (datetime(2023, 1, 1, tzinfo=UTC), (0, 365), ["01-01", "12-31"]),  # a whole year
        (datetime(2024, 3, 1, tzinfo=UTC), (-1, -1), ["02-29", "02-29"]),
    ],
)
def test_anniversary_windows_become_ranges_of_month_days(
    now: datetime, window: tuple[int, int], expected: list[str]
) -> None:
    low, high = window
    raw = {"field": "birthday", "op": "anniversary", "value": [{"days": low}, {"days": high}]}
    assert to_json(resolve(validate(raw, SCHEMA), now))["value"] == expected


def test_the_calendars_ends_bound_relative_values() -> None:
    """Near years 1 and 9999 a relative value stops at the end instead of failing."""
    rule = validate(
        {
            "all": [
                {"field": "birthday", "op": "lte", "value": {"days": 36_600}},
                {"field": "last_login", "op": "gte", "value": {"hours": -876_000}},
                {"field": "birthday", "op": "anniversary", "value": [{"days": 0}, {"days": 3}]},
            ]
        },
        SCHEMA,
    )
    late = to_json(resolve(rule, datetime(9998, 12, 31, tzinfo=UTC)))["all"]
    assert late[0]["value"] == "9999-12-31"
    early = to_json(resolve(rule, datetime(1, 1, 1, 12, tzinfo=UTC)))["all"]
    assert early[1]["value"] == "0001-01-01T00:00:00Z"


def test_a_moment_is_fixed_to_its_second_as_the_sql_fixes_it() -> None:
    """Before 1970 and far ahead too: the second is floored exactly, not through a float."""
    rule = validate({"field": "birthday", "op": "eq", "value": {"days": 0}}, SCHEMA)
    match = compile_predicate(rule)
    for moment in (
        datetime(1969, 12, 31, 15, 59, 59, 500_000, tzinfo=UTC),  # 23:59:59.5 in Shanghai
        datetime(3000, 1, 1, 15, 59, 59, 999_999, tzinfo=UTC),
    ):
        day = to_json(resolve(rule, moment))["value"]
        with evaluated_at(moment):
            assert match({"birthday": day})
    before_1970 = datetime(1969, 12, 31, 15, 59, 59, 500_000, tzinfo=UTC)
    by_clock = compile_predicate(rule, clock=before_1970.timestamp)  # -28800.5 s
    assert by_clock({"birthday": "1969-12-31"})
