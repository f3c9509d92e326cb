"""The profile's own fields: their rules, shared by the JSON API and the CSV import (pure)."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable
from functools import lru_cache

from app.messages.schemas import EMAIL_PATTERN, OPENID_PATTERN, PHONE_PATTERN

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$"
TAG_PATTERN = r"^[^|\x00-\x1f\ud800-\udfff]{1,64}$"  # no lone surrogates: not UTF-8
DEFAULT_LOCALE = "zh-CN"
MAX_NAME = 200
MAX_LOCALE = 16  # customers.locale
MAX_TAGS = 100
TAG_SEPARATOR = "|"

_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
_EMAIL = re.compile(EMAIL_PATTERN)
_OPENID = re.compile(OPENID_PATTERN)
_LOCALE = re.compile(LOCALE_PATTERN)
_TAG = re.compile(TAG_PATTERN)


class InvalidField(ValueError):
    pass


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def customer_id(value: str) -> str:
    if not _CUSTOMER_ID.match(value):
        raise InvalidField("1 to 64 letters, digits, _ . : - (starting with a letter or digit)")
    return value


def name(value: str) -> str:
    if "\x00" in value or len(value) > MAX_NAME:
        raise InvalidField(f"at most {MAX_NAME} characters, no NUL")
    return value


def phone(value: str) -> str:
    if not _PHONE.match(value):
        raise InvalidField("digits, optionally with a leading +, e.g. 13800000000")
    return value


def email(value: str) -> str:
    if len(value) > 320 or not _EMAIL.match(value):
        raise InvalidField("an email address such as zhang.san@example.com")
    return value


def wechat_openid(value: str) -> str:
    if not _OPENID.match(value):
        raise InvalidField("6 to 64 letters, digits, _ or -")
    return value


def locale(value: str) -> str:
    if len(value) > MAX_LOCALE or not _LOCALE.match(value):
        raise InvalidField(
            f"a language tag such as zh-CN or en-US, at most {MAX_LOCALE} characters"
        )
    return value


def timezone(value: str) -> str:
    if value not in _timezones():
        raise InvalidField("an IANA time zone such as Asia/Shanghai")
    return value


def tags(values: Iterable[str]) -> list[str]:
    """Unique tags in a stable (sorted) order, so that the same set is stored the same way."""
    out = sorted({v.strip() for v in values if v.strip()})
    if len(out) > MAX_TAGS:
        raise InvalidField(f"at most {MAX_TAGS} tags")
    bad = [t for t in out if not _TAG.match(t)]
    if bad:
        raise InvalidField(
            f"{bad[0]!r}: tags are 1 to 64 characters without | or control characters"
        )
    return out


def split_tags(cell: str) -> list[str]:
    return tags(cell.split(TAG_SEPARATOR))


# what people and providers put between digits: "+86 138-0000-0000", "(0086) 138 ..."
_PHONE_SEPARATORS = str.maketrans("", "", " -().\u00a0\t")
_MAINLAND = "86"
_E164_DIGITS = (8, 15)  # a country code and a subscriber number: shorter ones are short codes


def phone_key(phone: str) -> str:
    """One spelling per number, to match replies with sends: a mainland number as its 11
    digits (13800000000 for +86 138-0000-0000, 8613800000000 or 008613800000000), another
    number given with its country code as "+" and digits (+14155550100: not the mainland
    number 14155550100), other digits as they are, without separators. Text that is not a
    number stays as it is."""
    text = phone.strip().translate(_PHONE_SEPARATORS)
    international = text.startswith(("+", "00"))
    digits = text[1:] if text.startswith("+") else text[2:] if text.startswith("00") else text
    if not digits.isdigit():
        return phone.strip()
    if digits.startswith(_MAINLAND) and len(digits) == 13:
        return digits[2:]
    return f"+{digits}" if international else digits


def reply_keys(phone: str) -> list[str]:
    """The keys (``phone_key``) that SMS replies from ``phone`` may be stored under: its own
    and, for a number with a country code, that of its digits without the "+", which some
    providers report (14155550100 for +14155550100); for digits that may be a country code
    and number stored without "+" (85291234567, Aliyun's international form), that of the
    same digits with it, as other providers report them. Over-matching a number of the same
    digits only suppresses; missing an opt-out would not be lawful."""
    key = phone_key(phone)
    if key.startswith("+"):
        return sorted({key, phone_key(key[1:])})
    if _maybe_international(key):
        return sorted({key, f"+{key}"})
    return [key]


def _maybe_international(key: str) -> bool:
    """Bare digits of an E.164 length that are not a mainland mobile number (11 digits
    from 1)."""
    mainland = len(key) == 11 and key.startswith("1")
    return key.isdigit() and _E164_DIGITS[0] <= len(key) <= _E164_DIGITS[1] and not mainland


def phone_variants(sender: str, *, exact: bool = False) -> list[str]:
    """The spellings a phone number may be stored under (customers' and recipients' phones
    are digits with an optional "+"): 13800000000, 8613800000000 and +8613800000000 name the
    same mainland number; +14155550100 and 0014155550100 another one. A sender reported
    without "+" or "00" may be either (see ``reply_keys``): 14155550100 is also looked up
    as +14155550100, and +85291234567 as 85291234567 (stored without "+"), unless ``exact``
    (an erasure must not take one number for another)."""
    key = phone_key(sender)
    found = {sender.strip(), key}
    text = sender.strip().translate(_PHONE_SEPARATORS)
    if not exact and text.isdigit() and _E164_DIGITS[0] <= len(text) <= _E164_DIGITS[1]:
        found |= {f"+{text}", f"00{text}"}
    if key.startswith("+"):
        found.add(f"00{key[1:]}")
        if not exact and _maybe_international(key[1:]):  # not a mainland number's digits
            found.add(key[1:])
    elif key.isdigit() and len(key) == 11:
        found |= {f"{_MAINLAND}{key}", f"+{_MAINLAND}{key}", f"00{_MAINLAND}{key}"}
    return sorted(found)
