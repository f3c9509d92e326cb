"""SMS length and segment counting (pure), shared by the template editor and the SMS channel.

A text that uses only the GSM 03.38 alphabet travels as GSM-7: 160 septets in one SMS, 153 per
part once it is split (the rest of each part carries the concatenation header). Characters of
the extension table (``^{}\\[~]|€`` and form feed) take two septets. Anything else forces
UCS-2: 70 UTF-16 code units in one SMS, 67 per part; characters outside the Basic Multilingual
Plane (most emoji) are surrogate pairs and count 2.

A handset never splits an escape sequence or a surrogate pair across two parts, so the parts
are packed greedily rather than by dividing the total.

The signature (``【示例银行】``) is part of what the carrier sends and counts like any other
text; being full-width, it also makes every signed Chinese SMS UCS-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 default alphabet, in code order, without the escape (0x1B) that introduces the
# extension table.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsLength:
    """How a text travels: ``characters`` counts septets (GSM-7) or UTF-16 code units
    (UCS-2), the unit the carriers bill by; ``per_segment`` is the capacity of one part at
    this length (160/70 for a single SMS, 153/67 once split)."""

    encoding: Encoding
    characters: int
    segments: int
    per_segment: int


def with_signature(text: str, signature: str | None) -> str:
    """The text as the handset shows it: ``【signature】`` in front unless already there."""
    if not signature:
        return text
    sign = signature if signature.startswith("【") else f"【{signature}】"
    if text.startswith(sign) or text.endswith(sign):
        return text
    return sign + text


GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


def sms_length(text: str, *, signature: str | None = None) -> SmsLength:
    """Encoding, length and number of parts of ``text`` (signature included when given)."""
    full = with_signature(text, signature)
    # The common texts take one unit per character (plain GSM-7, or UCS-2 without emoji):
    # then the parts are a plain division, counted without a per-character loop.
    if GSM7_BASIC.issuperset(full):
        return _uniform("GSM-7", len(full), GSM7_SINGLE, GSM7_PART)
    if not GSM7_ALL.issuperset(full):
        units16 = len(full.encode("utf-16-le", "surrogatepass")) // 2
        if units16 == len(full):
            return _uniform("UCS-2", units16, UCS2_SINGLE, UCS2_PART)
        return _measure("UCS-2", _ucs2_units(full), UCS2_SINGLE, UCS2_PART)
    # GSM-7 with characters of the extension table, which take two septets
    return _measure("GSM-7", _gsm7_units(full), GSM7_SINGLE, GSM7_PART)


def fits_segments(text: str, max_segments: int, *, signature: str | None = None) -> bool:
    """Whether ``text`` (signature included when given) travels in at most ``max_segments``."""
    return sms_length(text, signature=signature).segments <= max_segments


def _gsm7_units(text: str) -> list[int]:
    """Septets per character of a text of the GSM-7 alphabet (basic or extension table)."""
    return [1 if char in GSM7_BASIC else 2 for char in text]


def _ucs2_units(text: str) -> list[int]:
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def _uniform(encoding: Encoding, total: int, single: int, part: int) -> SmsLength:
    """One unit per character: no character can straddle two parts."""
    if total <= single:
        return SmsLength(encoding, total, 1 if total else 0, single)
    return SmsLength(encoding, total, -(-total // part), part)


def _measure(encoding: Encoding, units: list[int], single: int, part: int) -> SmsLength:
    total = sum(units)
    if total <= single:  # one SMS: nothing to pack
        return _uniform(encoding, total, single, part)
    return SmsLength(encoding, total, _pack(units, part), part)


def _pack(units: list[int], part: int) -> int:
    """Parts needed when no character is split across two parts."""
    parts, used = 1, 0
    for size in units:
        if used + size > part:
            parts, used = parts + 1, 0
        used += size
    return parts
