"""SMS length and segments: GSM-7 160/153, UCS-2 70/67, signature counted, no split
escape sequences or surrogate pairs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from templates.sms_length import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SmsLength,
    fits_segments,
    sms_length,
    with_signature,
)

NOTICE = "您尾号1234的账户于11月23日支出人民币1,200.00元，余额8,800.00元。"


def test_the_gsm_alphabet_is_complete() -> None:
    # 128 code points minus the escape that introduces the extension table.
    assert len(GSM7_BASIC) == 127
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SmsLength("GSM-7", 0, 0, 160)),
        ("a" * 160, SmsLength("GSM-7", 160, 1, 160)),
        ("a" * 161, SmsLength("GSM-7", 161, 2, 153)),
        ("a" * 306, SmsLength("GSM-7", 306, 2, 153)),
        ("a" * 307, SmsLength("GSM-7", 307, 3, 153)),
        ("Ça coûte 5€ à Zürich", SmsLength("UCS-2", 20, 1, 70)),  # û is not GSM
    ],
)
def test_gsm7_and_its_limits(text: str, expected: SmsLength) -> None:
    assert sms_length(text) == expected


def test_extension_characters_count_two() -> None:
    assert sms_length("€" * 80) == SmsLength("GSM-7", 160, 1, 160)
    assert sms_length("€" * 81) == SmsLength("GSM-7", 162, 2, 153)
    assert sms_length("[a]{b}").characters == 10


def test_an_escape_sequence_is_not_split_across_parts() -> None:
    # 306 septets would fit two parts of 153, but the euro cannot straddle them.
    text = "a" * 152 + "€" + "a" * 152
    assert sms_length(text) == SmsLength("GSM-7", 306, 3, 153)


def test_chinese_text_is_ucs2() -> None:
    length = sms_length(NOTICE)
    assert length.encoding == "UCS-2"
    assert length.characters == len(NOTICE)
    assert length.segments == 1


@pytest.mark.parametrize(
    ("body_chars", "segments"), [(64, 1), (65, 2), (128, 2), (129, 3), (195, 3), (196, 4)]
)
def test_the_signature_counts_towards_70_and_67(body_chars: int, segments: int) -> None:
    # 【示例银行】 is 6 characters: 64 + 6 = 70 fits one SMS, 65 + 6 = 71 needs two.
    length = sms_length("账" * body_chars, signature="示例银行")
    assert length.characters == body_chars + 6
    assert length.segments == segments


def test_brackets_make_even_ascii_text_ucs2() -> None:
    length = sms_length("Your code is 123456", signature="Bank")
    assert length.encoding == "UCS-2"
    assert length.characters == len("【Bank】Your code is 123456")


def test_emoji_count_two_code_units() -> None:
    assert sms_length("😀").characters == 2
    assert sms_length("😀" * 35) == SmsLength("UCS-2", 70, 1, 70)
    assert sms_length("😀" * 36) == SmsLength("UCS-2", 72, 2, 67)


def test_a_surrogate_pair_is_not_split_across_parts() -> None:
    text = "中" * 66 + "😀" + "中" * 66  # 134 units: two parts by arithmetic, three in truth
    assert sms_length(text) == SmsLength("UCS-2", 134, 3, 67)


def test_the_signature_is_added_once() -> None:
    signed = "【示例银行】" + NOTICE
    assert with_signature(NOTICE, "示例银行") == signed
    assert with_signature(NOTICE, "【示例银行】") == signed
    assert with_signature(signed, "示例银行") == signed
    assert with_signature(NOTICE + "【示例银行】", "示例银行") == NOTICE + "【示例银行】"
    assert with_signature(NOTICE, None) == NOTICE
    assert sms_length(signed) == sms_length(NOTICE, signature="示例银行")


def test_fits_a_budget_of_segments() -> None:
    patch = "理财产品年化收益率3.5%，详询客户经理。"
    assert fits_segments(NOTICE, 1, signature="示例银行")
    assert not fits_segments(NOTICE + patch, 1, signature="示例银行")
    assert fits_segments(NOTICE + patch, 2, signature="示例银行")
    assert fits_segments("", 0)


def _reference(text: str) -> tuple[str, int, int]:
    """The length by the definition: units per character, parts packed one by one."""
    gsm = [1 if c in GSM7_BASIC else 2 if c in GSM7_EXTENSION else 0 for c in text]
    if all(gsm):
        units, single, part, encoding = gsm, 160, 153, "GSM-7"
    else:
        units, single, part, encoding = [2 if ord(c) > 0xFFFF else 1 for c in text], 70, 67, "UCS-2"
    total = sum(units)
    if total <= single:
        return encoding, total, 1 if total else 0
    parts, used = 1, 0
    for size in units:
        if used + size > part:
            parts, used = parts + 1, 0
        used += size
    return encoding, total, parts


@given(
    st.text(
        alphabet=st.sampled_from(
            [*"abc XYZ019@£", *"^{}[~]€", *"您尾号的账户支出元，。", "😀", "𠀀", "\ud800"]
        ),
        max_size=400,
    )
)
def test_the_fast_count_agrees_with_the_definition(text: str) -> None:
    counted = sms_length(text)
    assert (counted.encoding, counted.characters, counted.segments) == _reference(text)
