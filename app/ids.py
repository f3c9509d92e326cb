"""Opaque, time-sortable ids: a prefix and a ULID (48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import base64
import os
import time

# base32 of RFC 4648 mapped onto Crockford's alphabet, whose ASCII order matches the
# values: the text sorts like the number, so later ids sort after earlier ones.
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def new_id(prefix: str) -> str:
    """Return e.g. ``msg_01JD3T6Q6F8X0M2N4P6R8S0T2V``; later ids sort after earlier ones."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    # 20 bytes are 32 base32 characters; the first 6 only carry the 30 zero bits above the
    # 128-bit value, the other 26 are the ULID.
    text = base64.b32encode(value.to_bytes(20, "big")).translate(_TO_CROCKFORD)
    return f"{prefix}_{text[6:].decode()}"
