"""Deterministic, sticky experiment assignment (pure: no I/O, no clock, no randomness).

The scheme is GrowthBook's (growthbook/growthbook packages/sdk-js/src/util.ts, hash version 2):

1. ``hash_v2(salt, customer_id) = fnv1a32(str(fnv1a32(salt + customer_id))) % 10000 / 10000``,
   a number in [0, 1) on a grid of 10,000 buckets. The second round, over the decimal digits
   of the first hash, is GrowthBook's answer to v1 (``fnv1a32(id + seed) % 1000``, "the
   original biased hashing algorithm" in util.ts): the bucket depends on all 32 bits of the
   first hash, not only on its low digits.
2. The variants' weights become consecutive ranges of [0, 1); the customer gets the variant whose
   range holds the hash. ``coverage`` (the sample fraction) shrinks every range from its start.

What string is hashed: exactly ``salt + customer_id`` (no separator, no normalisation, no
trimming), encoded as UTF-8, and FNV-1a runs over those bytes (standard FNV-1a is defined on
octets). For ASCII ids, the usual case, the result equals GrowthBook's SDKs bit for bit. For
other ids (Chinese names in ids, full-width digits) GrowthBook's JavaScript SDK XORs whole UTF-16
code units instead of bytes, so it differs from ours; we choose UTF-8 so that the hash is the
same in any language and database that has the id's bytes. Ids are opaque: "Ｃ001" (full-width)
and "C001" are different customers, and callers must pass the canonical id.

Guarantees (tested in tests/abtest/test_assignment.py):

- Sticky: the same salt, id, weights and coverage give the same variant in any process, on any
  machine, in any Python version (no use of ``hash()`` or random state).
- Independent across experiments: different salts give unrelated hashes, so the groups of one
  experiment are spread evenly over the groups of another.
- Raising the coverage only adds customers: everyone already assigned keeps their variant,
  because each range grows from its fixed start.
- Changing weights moves only the customers between an old and a new range boundary. Weights are
  normalised by their total, so a change of one weight moves every boundary after it (and, if
  the total changes, all boundaries): a variant keeps its customers only when the normalised
  weights before it and its own normalised weight are unchanged. This is what GrowthBook
  guarantees too, and why a running experiment's variants and weights are frozen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Assigner", "Variant", "assign", "bucket_ranges", "choose", "fnv1a32", "hash_v2"]

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK = 0xFFFFFFFF
BUCKETS = 10_000  # GrowthBook v2's resolution: weights finer than 0.0001 are rounded by the grid


def _fnv_bytes(state: int, data: bytes) -> int:
    for byte in data:
        state = ((state ^ byte) * _FNV_PRIME) & _MASK
    return state


def fnv1a32(text: str) -> int:
    """FNV-1a, 32 bits, over the UTF-8 bytes of ``text``."""
    return _fnv_bytes(_FNV_OFFSET, text.encode())


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800") has no UTF-8 form, hence no hash.
        raise ValueError(f"{what} is not valid Unicode text: {text!r}") from None


def _finish(inner: int) -> float:
    return (_fnv_bytes(_FNV_OFFSET, str(inner).encode()) % BUCKETS) / BUCKETS


def hash_v2(seed: str, value: str) -> float:
    """GrowthBook's hash v2 of ``seed + value``: a float in [0, 1) with 10,000 steps."""
    return _finish(fnv1a32(seed + value))


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an experiment: its key (recorded per customer) and its relative weight."""

    key: str
    weight: float

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("variant key must be a non-empty string")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"variant {self.key!r}: weight must be a positive number")


def _check_coverage(coverage: float) -> None:
    if not (math.isfinite(coverage) and 0 < coverage <= 1):
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")


def bucket_ranges(weights: Sequence[float], coverage: float = 1.0) -> list[tuple[float, float]]:
    """The [start, end) range of [0, 1) of each weight, in order.

    Weights are normalised by their total. Range i starts where the full-coverage ranges before
    it end and covers ``coverage`` of its share, so sampling a fraction of the segment keeps the
    split between the variants and a larger coverage later keeps everyone where they were.
    """
    if not weights:
        raise ValueError("at least one weight is needed")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"weights must be positive numbers, got {list(weights)!r}")
    _check_coverage(coverage)
    total = math.fsum(weights)
    ranges, cumulative = [], 0.0
    for weight in weights:
        # Starts come from the running sum of the raw weights, so integer weights such as
        # 10/45/45 give exact boundaries and the last range ends at exactly 1.0.
        start = cumulative / total
        cumulative += weight
        ranges.append((start, start + coverage * (cumulative / total - start)))
    return ranges


def choose(n: float, ranges: Sequence[tuple[float, float]]) -> int | None:
    """The index of the first range with ``start <= n < end``; None when none holds ``n``."""
    for index, (start, end) in enumerate(ranges):
        if start <= n < end:
            return index
    return None


class Assigner:
    """Assignment for one experiment, prepared once (validated ranges, hash state of the salt).

    FNV-1a reads its input left to right, so the state after the salt's bytes is kept and each
    customer id only costs its own bytes plus the ~10 digits of the second round.
    """

    __slots__ = ("_keys", "_ranges", "_salt_state", "salt")

    def __init__(self, *, salt: str, variants: Sequence[Variant], coverage: float = 1.0) -> None:
        if not salt:
            raise ValueError("salt must be a non-empty string (one per experiment)")
        if not variants:
            raise ValueError("an experiment needs at least one variant")
        keys = [v.key for v in variants]
        if len(set(keys)) != len(keys):
            raise ValueError(f"variant keys must be unique, got {keys!r}")
        self.salt = salt
        self._keys = tuple(keys)
        self._ranges = tuple(bucket_ranges([v.weight for v in variants], coverage))
        self._salt_state = _fnv_bytes(_FNV_OFFSET, _utf8(salt, "salt"))

    def hash(self, customer_id: str) -> float:
        """``hash_v2(salt, customer_id)``, from the precomputed salt state."""
        return _finish(_fnv_bytes(self._salt_state, _utf8(customer_id, "customer_id")))

    def assign(self, customer_id: str) -> str | None:
        """The variant key of ``customer_id``, or None when it falls outside the sample."""
        if not customer_id:
            raise ValueError("customer_id must be a non-empty string")
        index = choose(self.hash(customer_id), self._ranges)
        return None if index is None else self._keys[index]


def assign(
    *, salt: str, customer_id: str, variants: Sequence[Variant], coverage: float = 1.0
) -> str | None:
    """The variant key for ``customer_id`` in the experiment salted ``salt``.

    None means the customer is not in the sample (``coverage`` < 1). Deterministic: the same
    arguments always give the same answer. Raises ValueError on an empty salt or id, no variants,
    duplicate keys, a non-positive weight or a coverage outside (0, 1]. For many customers of one
    experiment, build an :class:`Assigner` once.
    """
    return Assigner(salt=salt, variants=variants, coverage=coverage).assign(customer_id)
