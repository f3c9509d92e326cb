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


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` ids of this millisecond, as :func:`new_id` makes them but at a fraction of the
    cost (one random read and one base32 pass for all): for batches of messages."""
    millis = time.time_ns() // 1_000_000
    head = base64.b32encode((millis << 80).to_bytes(20, "big")).translate(_TO_CROCKFORD)
    # The ULID's first 10 characters are the 50 bits above the random ones (2 zero bits and
    # the time); 10 random bytes are exactly the 16 characters after them, so one pass over
    # all the random bytes encodes every id's random part.
    start = f"{prefix}_{head[6:16].decode()}"
    tails = base64.b32encode(os.urandom(10 * count)).translate(_TO_CROCKFORD).decode()
    return [start + tails[i : i + 16] for i in range(0, 16 * count, 16)]


def first_id_at(prefix: str, millis: int) -> str:
    """The smallest id :func:`new_id` makes in millisecond ``millis`` (since the epoch): the
    bound of a range scan by time over an index of ids."""
    head = base64.b32encode((millis << 80).to_bytes(20, "big")).translate(_TO_CROCKFORD)
    return f"{prefix}_{head[6:].decode()}"
