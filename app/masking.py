"""Masking of personal data (phones, emails, WeChat openids, names) for logs and lists."""

from __future__ import annotations

import re
from typing import Any

_PHONE = re.compile(r"(?<!\d)(\+?86[- ]?)?(1[3-9]\d)[- ]?(\d{4})[- ]?(\d{4})(?!\d)")
# another country's number, written with "+" or "00", digits maybe grouped by spaces or
# hyphens: masked as mask_phone masks it (+1415****0100)
_INTERNATIONAL_PHONE = re.compile(r"(?<![\d+])(?:\+|00)\d(?:[ -]?\d){7,14}(?!\d)")
# \w: internationalized addresses too (张三@例子.中国), which the API accepts
# (the local part bounded, as RFC 5321 bounds it: unbounded, a long run of CJK text made the
# search quadratic)
_EMAIL = re.compile(r"([\w.%+-])[\w.%+-]{0,63}@([\w.-]+\.[^\W\d_]{2,})")
# full-width digits and plus (a Chinese input method's): read as ASCII before matching
_FULL_WIDTH = str.maketrans("０１２３４５６７８９＋", "0123456789+")
# A number under a phone's label, whatever its form: Aliyun takes another country's number
# without "+" or "00" (PhoneNumbers=85291234567,85291234568), which nothing else tells
# apart from an account number in free text. At most 15 digits (E.164), so that two numbers
# a space apart are two. Masked before the other patterns, which would leave a list's later
# numbers behind a masked one. (No two adjacent optional runs of spaces: quadratic.)
_NUMBER = r"\+?\d(?:[ -]?\d){5,14}(?!\d)"
_LABELLED_PHONES = re.compile(
    r"((?:\b(?:phone_?(?:numbers?|no)|phonenumberset|(?:mobile_?)?phones?|mobiles?|msisdn|tel)\b"
    r"|手机号码?|电话(?:号码)?)"
    r"[\"']?\s*(?:[=:：]\s*)?\[?[\"']?)"
    rf"({_NUMBER}(?:[\"']?(?:\s*[,;，、])?\s*[\"']?{_NUMBER})*)",
    re.IGNORECASE,
)
_NUMBERS_ONLY = re.compile(r"[\d\s,;+-]+")
_OPENID = re.compile(
    r"(?<![A-Za-z0-9_-])(o[A-Za-z0-9_-]{3})[A-Za-z0-9_-]{20}([A-Za-z0-9_-]{4})(?![A-Za-z0-9_-])"
)


# Credentials some providers take in the query string (WeChat: access_token, and the
# AppSecret at /cgi-bin/token), which an HTTP library's error text repeats with the URL.
_SECRET_PARAM = re.compile(r"((?:access_token|secret)=)[^&\s\"'>]+")


def redact_secrets(text: str) -> str:
    """Blank the values of ``access_token=`` and ``secret=`` (``app_secret=`` too)."""
    return _SECRET_PARAM.sub(r"\1***", text)


def mask_phone(phone: str) -> str:
    digits = phone.strip()
    if len(digits) < 7:
        return "*" * len(digits)
    return f"{digits[:-8]}****{digits[-4:]}" if len(digits) >= 11 else f"{digits[:3]}****"


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_openid(openid: str) -> str:
    return f"{openid[:4]}****{openid[-4:]}" if len(openid) > 8 else "****"


def mask_name(name: str) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧***; Li Lei → L*****."""
    return name[:1] + "*" * (len(name) - 1) if name else name


def mask_text(text: str) -> str:
    """Mask every phone number, email address and openid found in free text."""
    if not text.isascii():
        text = text.translate(_FULL_WIDTH)
    text = _LABELLED_PHONES.sub(_mask_labelled, text)
    text = _PHONE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}****{m.group(4)}", text)
    text = _INTERNATIONAL_PHONE.sub(lambda m: _masked_number(m.group()), text)
    if "@" in text:
        text = _EMAIL.sub(r"\1***@\2", text)
    return _OPENID.sub(r"\1****\2", text)


def _mask_labelled(match: re.Match[str]) -> str:
    return match.group(1) + _mask_numbers(match.group(2))


def _mask_numbers(text: str) -> str:
    """Each number of a list (85291234567,85291234568)."""
    return re.sub(_NUMBER, lambda m: _masked_number(m.group()), text)


def _masked_number(number: str) -> str:
    """A number written with spaces or hyphens, masked as mask_phone masks it."""
    return mask_phone(re.sub(r"[ -]", "", number))


# Keys whose values are contact points whatever they look like (a log's extras, a provider's
# request or answer): lower case, without "_" and "-".
_CONTACT_KEYS = frozenset(
    {"phone", "phones", "phonenumber", "phonenumbers", "phonenumberset", "phoneno"}
    | {"mobile", "mobilephone", "msisdn"}
    | {"email", "wechatopenid", "openid", "touser", "sender", "recipient", "to"}
)


def _contact(value: str) -> str:
    """A contact point (or a list of them) of unknown kind, masked by its look."""
    if _NUMBERS_ONLY.fullmatch(value):
        return _mask_numbers(value)
    masked = mask_text(value)
    return mask_email(value) if masked == value and "@" in value else masked


def mask_value(value: Any, *, contact: bool = False) -> Any:
    """Mask strings inside nested JSON-like structures; the values of contact keys (phone,
    email, openid...) whatever their form."""
    if isinstance(value, str):
        return _contact(value) if contact else mask_text(value)
    if contact and isinstance(value, int) and not isinstance(value, bool):
        return _contact(str(value))  # {"phone": 13800001234}
    if isinstance(value, dict):
        return {k: mask_field(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, contact=contact) for v in value]
    return value


def mask_field(key: object, value: Any) -> Any:
    """A field's value masked (``mask_value``), as a contact point under a contact's key."""
    contact = (
        isinstance(key, str) and key.lower().replace("_", "").replace("-", "") in _CONTACT_KEYS
    )
    return mask_value(value, contact=contact)


_CONTACT_MASKS = {"phone": mask_phone, "email": mask_email, "wechat_openid": mask_openid}


def mask_contact(field: str, value: str) -> str:
    """Mask a contact point by its kind (``phone``, ``email``, ``wechat_openid``)."""
    masker = _CONTACT_MASKS.get(field)
    return masker(value) if masker else mask_text(value)
