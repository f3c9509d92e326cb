"""Pure parts of customers: attribute types, profile fields, consent, the CSV record splitter."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.customers import fields
from app.customers.attributes import (
    AttributeType,
    InvalidValue,
    check_attributes,
    coerce,
    coerce_cell,
    shown,
)
from app.customers.consent import Purpose, allows, consent_state
from app.customers.csv_import import InvalidCsv, RecordSplitter, parse_record

T = AttributeType


@pytest.mark.parametrize(
    ("type_", "value", "stored"),
    [
        (T.number, "1200000.50", 1200000.5),
        (T.number, 1200000, 1200000),
        (T.number, "1E+3", 1000),
        (T.number, 0.1, 0.1),
        (T.number, "99999999999999.9", 99999999999999.9),
        (T.integer, "42", 42),
        (T.integer, -7, -7),
        (T.boolean, "YES", True),
        (T.boolean, "0", False),
        (T.boolean, False, False),
        (T.date, "2024-02-29", "2024-02-29"),
        (T.datetime, "2026-11-23T09:30:00.5+08:00", "2026-11-23T01:30:00Z"),
        (T.datetime, "2026-11-23T01:30:00Z", "2026-11-23T01:30:00Z"),
        (T.string, "私人银行", "私人银行"),
        (T.string_list, ["a", "b"], ["a", "b"]),
    ],
)
def test_values_are_stored_in_one_form(type_: AttributeType, value: Any, stored: Any) -> None:
    assert coerce(type_, value) == stored
    assert type(coerce(type_, value)) is type(stored)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (T.number, "1,200"),
        (T.number, "NaN"),
        (T.number, "Infinity"),
        (T.number, True),
        (T.number, "1234567890123456"),  # 16 digits: not exact in a double
        (T.number, "1e15"),
        (T.integer, 1.5),
        (T.integer, True),
        (T.integer, str(2**63)),
        (T.boolean, "maybe"),
        (T.boolean, 1),
        (T.date, "2023-02-29"),
        (T.date, "20240101"),
        (T.datetime, "2026-11-23T09:30:00"),
        (T.datetime, 1700000000),
        (T.string, 5),
        (T.string, "a\x00b"),
        (T.string, "x" * 1001),
        (T.string_list, "a|b"),  # JSON lists are lists; only CSV cells are split
        (T.string_list, ["a", 1]),
    ],
)
def test_values_refused(type_: AttributeType, value: Any) -> None:
    with pytest.raises(InvalidValue):
        coerce(type_, value)


def test_numbers_are_exact_through_storage_and_shown_as_decimals() -> None:
    for text in ("0.01", "1200000.10", "99999999999999.9", "123456789.123456", "-0.5"):
        stored = coerce(T.number, text)
        assert Decimal(shown(T.number, stored)) == Decimal(text)
    assert shown(T.number, 1200000) == "1200000"
    assert shown(T.number, 1e-7) == "0.0000001"
    assert shown(T.string, "x") == "x"


def test_csv_cells_and_attribute_checks() -> None:
    assert coerce_cell(T.string_list, " fund | deposit ||") == ["fund", "deposit"]
    assert coerce_cell(T.integer, " 12 ") == 12
    stored, errors = check_attributes(
        {"aum": T.number, "tier": T.string}, {"aum": "5", "tier": None, "branch": "x"}
    )
    assert stored == {"aum": 5}
    assert [name for name, _ in errors] == ["branch"]


def test_profile_fields() -> None:
    assert fields.tags([" b", "a", "b", ""]) == ["a", "b"]
    with pytest.raises(fields.InvalidField):
        fields.tags(["a|b"])
    with pytest.raises(fields.InvalidField):
        fields.timezone("Asia/Beijing")
    assert fields.timezone("Asia/Shanghai") == "Asia/Shanghai"
    with pytest.raises(fields.InvalidField):
        fields.customer_id("C 1")
    assert set(fields.phone_variants("+8613800000001")) == {
        "13800000001",
        "8613800000001",
        "+8613800000001",
        "008613800000001",
    }
    assert "13800000001" in fields.phone_variants("13800000001")
    assert fields.phone_variants("10086") == ["10086"]
    # not 14155550100: those digits are a mainland number, another person
    assert fields.phone_variants("+1 415 555 0100") == [
        "+1 415 555 0100",
        "+14155550100",
        "0014155550100",
    ]
    assert "85291234567" in fields.phone_variants("+85291234567")  # as stored without "+"
    assert "85291234567" not in fields.phone_variants("+85291234567", exact=True)
    # a sender reported without "+": also the number with that country code
    assert set(fields.phone_variants("14155550100")) == {
        "14155550100",
        "+14155550100",
        "0014155550100",
        "8614155550100",
        "+8614155550100",
        "008614155550100",
    }
    uk = fields.phone_variants("447911123456")
    assert uk == ["+447911123456", "00447911123456", "447911123456"]


def test_reply_keys_cover_a_sender_reported_without_plus() -> None:
    assert fields.reply_keys("+1 415 555 0100") == ["+14155550100", "14155550100"]
    assert fields.reply_keys("0044 7911 123456") == ["+447911123456", "447911123456"]
    assert fields.reply_keys("+86 138 0000 0001") == ["13800000001"]
    assert fields.reply_keys("13800000001") == ["13800000001"]
    assert fields.reply_keys("95555") == ["95555"]
    # digits stored without "+" (Aliyun's international form) meet replies reported with it
    assert fields.reply_keys("85291234567") == ["+85291234567", "85291234567"]
    assert fields.reply_keys("447911123456") == ["+447911123456", "447911123456"]


def test_phone_key_is_one_spelling_per_number() -> None:
    mainland = ("13800000001", "+8613800000001", "8613800000001", "008613800000001")
    spaced = ("+86 138 0000 0001", "(0086) 138-0000-0001", "138 0000 0001")
    assert {fields.phone_key(p) for p in mainland + spaced} == {"13800000001"}
    # a number given with another country code is not the mainland number with its digits
    assert fields.phone_key("+13800000001") == "+13800000001"
    assert fields.phone_key("0013800000001") == "+13800000001"
    assert fields.phone_key("95555") == "95555"
    assert fields.phone_key(" oDemo-1 ") == "oDemo-1"  # not a number: as it is


def test_consent_state_defaults_and_records() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    state = consent_state([("sms", "marketing", False, "api:x", at)], marketing_granted=True)
    assert not allows(state, "sms", Purpose.marketing)
    assert allows(state, "email", "marketing")
    assert allows(state, "sms", "transactional")
    denied = consent_state([], marketing_granted=False)
    assert not allows(denied, "wechat", "marketing")
    assert allows(denied, "wechat", "transactional")


CSV = (
    "\ufeffid,name,note\r\n"
    'C1,张三,"line one\r\nline two, with ""quotes"""\r\n'
    "\r\n"
    "C2,李四,plain\r\n"
    'C3,"王五",last without break'
).encode()


def _split(data: bytes, size: int) -> list[tuple[int, bytes]]:
    splitter = RecordSplitter()
    records = []
    for start in range(0, len(data), size):
        records += splitter.feed(data[start : start + size])
    return records + splitter.close()


def test_records_are_the_same_however_the_stream_is_cut() -> None:
    whole = _split(CSV, len(CSV))
    assert [line for line, _ in whole] == [1, 2, 4, 5, 6]
    assert [parse_record(raw) for _, raw in whole] == [
        ["id", "name", "note"],
        ["C1", "张三", 'line one\r\nline two, with "quotes"'],
        [],
        ["C2", "李四", "plain"],
        ["C3", "王五", "last without break"],
    ]
    for size in (1, 2, 3, 5, 7, 64):
        assert _split(CSV, size) == whole, size


def test_splitter_bounds_a_record() -> None:
    splitter = RecordSplitter(max_record_bytes=100)
    with pytest.raises(InvalidCsv):
        splitter.feed(b"x" * 200)  # no line break
    quoted = RecordSplitter(max_record_bytes=100)
    quoted.feed(b'id,name\nC1,"open\n')
    with pytest.raises(InvalidCsv):
        quoted.feed(b"still inside the quotes\n" * 20)
    unclosed = RecordSplitter()
    unclosed.feed(b'id\n"C1\n')
    with pytest.raises(InvalidCsv):
        unclosed.close()
    with pytest.raises(ValueError, match="utf-8"):
        parse_record("李四".encode("gbk"))


_CELL = st.text(alphabet='ab 中文,"\n\r\t|', max_size=6)
_LOOSE = st.text(alphabet='ab 中文"|', max_size=6).filter(lambda c: not c.startswith('"'))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(_CELL.map(lambda c: ("quoted", c)), _LOOSE.map(lambda c: ("bare", c))),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=6,
    ),
    chunk=st.integers(1, 64),
)
def test_records_are_cut_where_the_csv_module_ends_them(
    rows: list[list[tuple[str, str]]], chunk: int
) -> None:
    """Quoted fields with line breaks, commas and doubled quotes, and unquoted ones with a
    stray quote inside (12" 显示器): each record the splitter cuts reads as the csv module
    reads the whole file, whatever the chunks the stream arrives in."""

    def cell(kind: str, text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if kind == "quoted" else text

    body = "".join(",".join(cell(k, t) for k, t in row) + "\n" for row in rows).encode()
    splitter = RecordSplitter()
    records: list[list[str]] = []
    for start in range(0, len(body), chunk):
        records += [parse_record(r) for _, r in splitter.feed(body[start : start + chunk])]
    records += [parse_record(r) for _, r in splitter.close()]
    assert records == list(csv.reader(io.StringIO(body.decode(), newline="")))
