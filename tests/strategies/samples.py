"""Test data for segments: an attribute schema, value pools shared by profiles and rules
(so that eq, in and contains hit), a fixed customer population full of awkward values, and
hypothesis strategies for raw (JSON) rules and profiles."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from strategies.attributes import AttributeSchema, AttributeType, coerce_value, json_number
from strategies.rules import MAX_DEPTH, OPS_BY_TYPE, Op

T = AttributeType
SCHEMA = AttributeSchema(
    {
        "aum": T.number,
        "balance": T.number,
        "age": T.integer,
        "risk_level": T.integer,
        "tier": T.string,
        "branch": T.string,
        "payroll": T.boolean,
        "birthday": T.date,
        "last_login": T.datetime,
        "tags": T.string_list,
        "products": T.string_list,
    }
)
NUMBERS = [
    Decimal(v)
    for v in (
        "0", "0.1", "0.2", "0.3", "1", "5", "-5", "-0.01", "8000", "56000", "499999.99",
        "500000", "500000.01", "1200000", "123456789.123456", "12345678901234.5",
        "999999999999999", "-999999999999999", "0.000001", "0.000000000000001",
    )
]  # fmt: skip
INTEGERS = [Decimal(v) for v in (-1, 0, 1, 2, 3, 5, 18, 65, 120, 2**40, 999_999_999_999_999)]
STRINGS = [
    "private", "Private", "mass", "vip", "", " ", "上海分行", "北京分行", "中", "分行",
    "💰财富", "café", "cafe\u0301", "a'b", 'say "hi"', "100%_off",
]  # fmt: skip
ITEMS = ["staff", "vip", "payroll", "理财", "贷款", "", "Staff"]
DATES = ["2024-01-01", "2024-02-29", "1999-12-31", "0001-01-01", "9999-12-31", "2024-01-02"]
DATETIMES = [
    "2024-01-01T00:00:00Z", "2023-12-31T16:00:00Z", "2024-06-01T12:30:45Z",
    "2024-01-01T00:00:01Z", "1970-01-01T00:00:00Z",
]  # fmt: skip
# Relative dates are fixed at one of NOWS in the tests. The first is midnight in UTC, 08:00 on
# 2024-01-01 in the bank's time zone, so that {"days": 0} and {"days": 1} are in DATES and
# {"hours": -8} in DATETIMES (boundaries are hit exactly); the others put anniversary windows
# around 28 February of a year without a 29th and of a leap year, and before 1970.
NOWS = [
    datetime(2024, 1, 1, tzinfo=UTC),
    datetime(2023, 2, 25, 17, 30, tzinfo=UTC),
    datetime(2024, 2, 27, 2, 0, 0, 500_000, tzinfo=UTC),
    datetime(1969, 12, 31, 15, 59, 59, 250_000, tzinfo=UTC),
]
LOCALES = ["zh-CN", "en-US", "zh-HK"]
TIMEZONES = ["Asia/Shanghai", "Europe/London", "America/New_York"]
# Stored values the customers API would not write (wrong JSON type, floats beyond the
# exact domain, big ints): they must read the same everywhere, mostly as missing.
GARBAGE: list[Any] = [
    "abc", "500000", "2024-01-01", "", 1, 0, 1.5, True, False, [], ["staff"], [1, "staff"],
    [["staff"]], {"a": 1}, {"staff": True}, 0.1 + 0.2, 1 / 3, 1e-7, 1.7976931348623157e308,
    2**62, -(2**62), 2**63 + 1, 5.0, -0.0,
]  # fmt: skip


def pool(type_: AttributeType) -> list[Any]:
    """Rule-side values (Decimal for numbers, stored text for the rest)."""
    pools: dict[AttributeType, list[Any]] = {
        T.number: NUMBERS,
        T.integer: INTEGERS,
        T.string: STRINGS + LOCALES + TIMEZONES,  # the built-ins are strings too
        T.boolean: [True, False],
        T.date: DATES,
        T.datetime: DATETIMES,
        T.string_list: ITEMS,
    }
    return pools[type_]


# ---- random values (rule side), hypothesis -------------------------------------------

texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=6,
) | st.text(alphabet="中文上海分行理财贷款éa\u0301 _%", max_size=4)
decimals = st.builds(
    lambda digits, scale: Decimal(digits).scaleb(-scale),
    st.integers(-(10**15) + 1, 10**15 - 1) | st.integers(-1000, 1000),
    st.integers(0, 6),
)
dates = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
offsets = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))])
datetimes = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9000, 1, 1), timezones=offsets
)


def scalars(type_: AttributeType) -> st.SearchStrategy[Any]:
    """Rule values as a marketer's JSON would carry them (numbers in several spellings)."""
    if type_ in (T.number, T.integer):
        numbers = st.sampled_from(pool(type_)) | decimals.map(
            lambda d: d.to_integral_value() if type_ is T.integer else d
        )
        return numbers.flatmap(
            lambda d: st.sampled_from([json_number(d), format(d, "f"), float(d)])
        )
    if type_ is T.date:
        return st.sampled_from(DATES) | dates.map(date.isoformat)
    if type_ is T.datetime:
        return st.sampled_from(DATETIMES) | datetimes.map(datetime.isoformat)
    if type_ is T.boolean:
        return st.booleans()
    return st.sampled_from(pool(type_)) | texts


def relatives(type_: AttributeType) -> st.SearchStrategy[dict[str, int]]:
    """Relative values of a date or datetime attribute, near NOW."""
    days = st.sampled_from([-1, 0, 1, 2, -8766]).map(lambda n: {"days": n})
    if type_ is T.datetime:
        return days | st.sampled_from([-8, -1, 0, 12]).map(lambda n: {"hours": n})
    return days


def operands(type_: AttributeType) -> st.SearchStrategy[Any]:
    """Rule values: scalars, and relative values for dates and datetimes."""
    if type_ in (T.date, T.datetime):
        return scalars(type_) | relatives(type_)
    return scalars(type_)


def _sort_key(type_: AttributeType, value: Any) -> Any:
    return Decimal(str(value)) if type_ in (T.number, T.integer) else coerce_value(type_, value)


def _hours(value: dict[str, int]) -> int:
    return value.get("days", 0) * 24 + value.get("hours", 0)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(SCHEMA)))
    type_ = SCHEMA[name].type
    op = draw(st.sampled_from(sorted(OPS_BY_TYPE[type_])))
    rule: dict[str, Any] = {"field": name, "op": op.value}
    if op is Op.contains:
        items = st.sampled_from(ITEMS[:-2] + STRINGS[:-1]) | texts
        rule["value"] = draw(items.filter(bool))
    elif op in (Op.in_, Op.not_in):
        rule["value"] = draw(st.lists(operands(type_), min_size=1, max_size=5))
    elif op is Op.anniversary:
        start = draw(st.integers(-3, 3))
        span = draw(st.sampled_from([1, 2, 60, 366]))
        rule["value"] = [{"days": start}, {"days": start + span - 1}]
    elif op is Op.between and type_ in (T.date, T.datetime) and draw(st.booleans()):
        pair = draw(st.lists(relatives(type_), min_size=2, max_size=2))
        rule["value"] = sorted(pair, key=_hours)
    elif op is Op.between:
        pair = draw(st.lists(scalars(type_), min_size=2, max_size=2))
        rule["value"] = sorted(pair, key=lambda v: _sort_key(type_, v))
    elif op is not Op.exists:
        rule["value"] = draw(operands(type_))
    return rule


def depth(rule: dict[str, Any]) -> int:
    if "not" in rule:
        return 1 + depth(rule["not"])
    children = rule.get("all") or rule.get("any") or []
    return 1 + max((depth(c) for c in children), default=0)


rules = st.recursive(
    conditions(),
    lambda children: (
        st.lists(children, min_size=1, max_size=4).map(lambda rs: {"all": rs})
        | st.lists(children, min_size=1, max_size=4).map(lambda rs: {"any": rs})
        | children.map(lambda r: {"not": r})
    ),
    max_leaves=10,
).filter(lambda r: depth(r) <= MAX_DEPTH)


# ---- stored values (profile side) ------------------------------------------------------


def stored_values(type_: AttributeType) -> st.SearchStrategy[Any]:
    """What may sit under an attribute's key: its stored form, null, or garbage."""
    if type_ is T.string_list:
        valid = st.lists(st.sampled_from(ITEMS) | texts, max_size=4)
    else:
        valid = scalars(type_).map(lambda v: coerce_value(type_, v))
    return valid | st.none() | st.sampled_from(GARBAGE)


profiles = st.fixed_dictionaries(
    {
        "locale": st.sampled_from([*LOCALES, None]),
        "timezone": st.sampled_from(TIMEZONES),
    },
    optional={name: stored_values(a.type) for name, a in SCHEMA.items() if not a.builtin},
)
"""A profile: the built-ins (a NULL locale too) and any subset of the attributes."""


# ---- the fixed population ---------------------------------------------------------------


def population(size: int = 300, seed: int = 20240501) -> list[dict[str, Any]]:
    """Customers as rows: id, locale, timezone and attributes (stored JSON)."""
    rng = random.Random(seed)
    rows = []
    for n in range(size):
        attributes = {
            name: _stored(rng, a.type)
            for name, a in SCHEMA.items()
            if not a.builtin and rng.random() > 0.3
        }
        if n % 50 == 7:
            attributes["locale"] = "xx"  # a stray key named like a built-in: the column wins
        if n % 37 == 0:
            attributes = {}
        rows.append(
            {
                "id": f"seg-{n:04d}",
                "locale": rng.choice(LOCALES),
                "timezone": rng.choice(TIMEZONES),
                "attributes": attributes,
            }
        )
    return rows


def _stored(rng: random.Random, type_: AttributeType) -> Any:
    roll = rng.random()
    if roll < 0.06:
        return None
    if roll < 0.14:
        return rng.choice(GARBAGE)
    if type_ is T.string_list:
        items = rng.sample(ITEMS, rng.randint(0, 3))
        return items if rng.random() > 0.1 else [*items, 1, *items]  # duplicates, a number
    if roll < 0.75:
        return coerce_value(type_, _pool_value(rng, type_))
    return coerce_value(type_, _random_value(rng, type_))


def _pool_value(rng: random.Random, type_: AttributeType) -> Any:
    value = rng.choice(pool(type_))
    return format(value, "f") if isinstance(value, Decimal) else value


def _random_value(rng: random.Random, type_: AttributeType) -> Any:
    if type_ in (T.number, T.integer):
        scale = 0 if type_ is T.integer else rng.randint(0, 6)
        return format(Decimal(rng.randint(-(10**12), 10**12)).scaleb(-scale), "f")
    if type_ is T.date:
        return (date(2000, 1, 1) + timedelta(days=rng.randint(0, 20000))).isoformat()
    if type_ is T.datetime:
        moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**8))
        return moment.isoformat()
    if type_ is T.boolean:
        return rng.random() < 0.5
    return "".join(rng.choice("中文上海分行理财abcé ") for _ in range(rng.randint(0, 4)))
