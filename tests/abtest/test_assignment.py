"""Experiment assignment: GrowthBook-compatible hashing, sticky, uniform, independent across salts.

The statistical tests use fixed ids and salts, so they are deterministic: a pass stays a pass.
Sequential ids (C0000000, C0000001, ...) are the hard case for a hash, since they differ only in
their last bytes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abtest.assignment import (
    BUCKETS,
    Assigner,
    Variant,
    assign,
    bucket_ranges,
    choose,
    fnv1a32,
    hash_v2,
)
from tests.abtest.chi2 import chi2_sf, goodness_of_fit, independence

IDS = [f"C{i:07d}" for i in range(100_000)]
SRM_ALPHA = 0.001  # the SRM threshold of issue 5 and GrowthBook's gbstats
HALF = [Variant("control", 1), Variant("treatment", 1)]
THREE = [Variant("holdout", 10), Variant("sms_wealth", 45), Variant("wechat_wealth", 45)]
ROOT = Path(__file__).resolve().parents[2]

weights_st = st.lists(st.integers(1, 100), min_size=1, max_size=6)
ids_st = st.text(min_size=1, max_size=40)
grid_st = st.integers(0, BUCKETS - 1).map(lambda b: b / BUCKETS)


def counts(assigner: Assigner, keys: list[str]) -> list[int]:
    tally = Counter(assigner.assign(c) for c in IDS)
    return [tally[k] for k in keys]


# --- the hash: GrowthBook's published vectors and the FNV-1a reference ------------------------


@pytest.mark.parametrize(
    ("text", "mod1000"),
    # GrowthBook's hash v1 cases (packages/sdk-js/test/cases.json): fnv1a32(value) % 1000
    [("a", 220), ("b", 77), ("ab", 946), ("def", 652), ("8952klfjas09ujkasdf", 549), ("123", 11)],
)
def test_fnv1a32_matches_growthbook(text: str, mod1000: int) -> None:
    assert fnv1a32(text) % 1000 == mod1000


def test_fnv1a32_reference_vectors() -> None:
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


def test_hash_v2_matches_growthbook() -> None:
    # cases.json: ["a", 0.0505, 2, "seed"]; the others agree with GrowthBook's SDK ports
    assert hash_v2("seed", "a") == 0.0505
    assert hash_v2("", "a") == 0.0216
    assert hash_v2("b", "a") == 0.665


def test_non_ascii_ids_are_hashed_as_utf8_bytes() -> None:
    name = "客户张三"
    data = name.encode("utf-8")
    assert len(data) == 12
    state = 0x811C9DC5
    for byte in data:  # FNV-1a over the 12 UTF-8 octets, written out
        state = ((state ^ byte) * 0x01000193) % 2**32
    assert fnv1a32(name) == state == 3119840321
    # GrowthBook's JS SDK XORs UTF-16 code units instead; for non-ASCII ids we differ on purpose
    code_units = 0x811C9DC5
    for char in name:
        code_units = ((code_units ^ ord(char)) * 0x01000193) % 2**32
    assert code_units != state


def test_long_ids_stay_32_bit() -> None:
    long_id = "C" + "9" * 100_000
    assert 0 <= fnv1a32(long_id) < 2**32
    assert 0 <= hash_v2("exp", long_id) < 1


@given(seed=st.text(), value=st.text())
def test_hash_v2_in_unit_interval_on_the_grid(seed: str, value: str) -> None:
    n = hash_v2(seed, value)
    assert 0 <= n < 1
    assert n == round(n * BUCKETS) / BUCKETS


@given(salt=st.text(min_size=1), customer_id=ids_st)
def test_assigner_hash_is_hash_v2(salt: str, customer_id: str) -> None:
    variants = [Variant("a", 1)]
    assert Assigner(salt=salt, variants=variants).hash(customer_id) == hash_v2(salt, customer_id)


# --- sticky: pinned values, and the same in another process -----------------------------------

# (salt, customer id, coverage, variant under THREE). Changing the hash or the ranges moves
# customers of running experiments: these must never change.
PINNED = [
    ("exp-2026-11-wealth", "C0001", 1.0, "wechat_wealth"),
    ("exp-2026-11-wealth", "C0002", 1.0, "wechat_wealth"),
    ("exp-2026-11-wealth", "C0004", 1.0, "sms_wealth"),
    ("exp-2026-11-wealth", "客户张三", 1.0, "sms_wealth"),
    ("exp-2026-11-wealth", "C" + "9" * 1000, 1.0, "sms_wealth"),
    ("exp-2026-11-wealth", "C0001", 0.2, "wechat_wealth"),
    ("exp-2026-11-wealth", "C0002", 0.2, None),
    ("exp-2026-11-wealth", "C" + "9" * 1000, 0.2, "sms_wealth"),
    ("loan-patch", "C0001", 1.0, "wechat_wealth"),
    ("loan-patch", "C0002", 1.0, "holdout"),
]


@pytest.mark.parametrize(("salt", "customer_id", "coverage", "expected"), PINNED)
def test_pinned_assignments(salt: str, customer_id: str, coverage: float, expected: str) -> None:
    for _ in range(2):
        got = assign(salt=salt, customer_id=customer_id, variants=THREE, coverage=coverage)
        assert got == expected


def test_same_assignments_in_other_processes() -> None:
    script = (
        "import json, sys\n"
        "from abtest.assignment import Variant, assign\n"
        "cases = json.loads(sys.stdin.read())\n"
        "v = [Variant(k, w) for k, w in cases['variants']]\n"
        "print(json.dumps([assign(salt=s, customer_id=c, variants=v, coverage=cov)"
        " for s, c, cov in cases['rows']]))\n"
    )
    rows = [(s, c, cov) for s, c, cov, _ in PINNED] + [("x", c, 0.5) for c in IDS[:200]]
    here = [assign(salt=s, customer_id=c, variants=THREE, coverage=cov) for s, c, cov in rows]
    payload = json.dumps({"variants": [(v.key, v.weight) for v in THREE], "rows": rows})
    for seed in ("0", "12345"):  # str hashing is randomised per process unless pinned
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", script], input=payload, env=env, capture_output=True,
            text=True, check=True, timeout=60,
        )  # fmt: skip
        assert json.loads(out.stdout) == here


def test_reproducible_from_the_salt() -> None:
    recorded = {c: Assigner(salt="campaign-42", variants=HALF).assign(c) for c in IDS[:5000]}
    rebuilt = Assigner(salt="campaign-42", variants=HALF)
    assert all(rebuilt.assign(c) == v for c, v in recorded.items())
    other = Assigner(salt="campaign-43", variants=HALF)
    moved = sum(other.assign(c) != v for c, v in recorded.items())
    assert abs(moved - 2500) < 5 * math.sqrt(5000 * 0.25)  # another salt: a fresh coin per id


# --- uniform: sample-ratio-mismatch check over 100,000 ids ------------------------------------


@pytest.mark.parametrize("salt", ["exp-a", "exp-2026-11-wealth", "营销实验"])
@pytest.mark.parametrize("variants", [HALF, THREE], ids=["50/50", "10/45/45"])
def test_split_passes_srm(salt: str, variants: list[Variant]) -> None:
    observed = counts(Assigner(salt=salt, variants=variants), [v.key for v in variants])
    assert sum(observed) == len(IDS)
    assert goodness_of_fit(observed, [v.weight for v in variants]) > SRM_ALPHA


def test_coverage_samples_the_fraction_and_keeps_the_split() -> None:
    assigner = Assigner(salt="exp-sample", variants=THREE, coverage=0.2)
    observed = counts(assigner, [v.key for v in THREE])
    sampled, n = sum(observed), len(IDS)
    assert abs(sampled - 0.2 * n) < 5 * math.sqrt(n * 0.2 * 0.8)  # binomial, 5 sigma
    assert goodness_of_fit(observed, [v.weight for v in THREE]) > SRM_ALPHA


# --- independent across salts -----------------------------------------------------------------


@pytest.mark.parametrize("variants", [HALF, THREE], ids=["2x2", "3x3"])
def test_salts_give_independent_groups(variants: list[Variant]) -> None:
    first = Assigner(salt="exp-channel", variants=variants)
    second = Assigner(salt="exp-content", variants=variants)
    keys = [v.key for v in variants]
    pairs = Counter((first.assign(c), second.assign(c)) for c in IDS)
    table = [[pairs[a, b] for b in keys] for a in keys]
    assert independence(table) > SRM_ALPHA


# --- ranges, choose, coverage and weight changes ----------------------------------------------


def test_bucket_ranges_like_growthbook() -> None:
    assert bucket_ranges([1, 1]) == [(0.0, 0.5), (0.5, 1.0)]
    assert bucket_ranges([0.5, 0.5], 0.5) == [(0.0, 0.25), (0.5, 0.75)]
    assert flat(bucket_ranges([0.4, 0.6], 0.1)) == pytest.approx([0, 0.04, 0.4, 0.46])
    assert flat(bucket_ranges([10, 45, 45], 0.2)) == pytest.approx([0, 0.02, 0.1, 0.19, 0.55, 0.64])


def flat(ranges: list[tuple[float, float]]) -> list[float]:
    return [bound for pair in ranges for bound in pair]


@given(weights=weights_st, coverage=st.floats(0.01, 1.0))
def test_ranges_partition_by_weight(weights: list[int], coverage: float) -> None:
    ranges = bucket_ranges(weights, coverage)
    total = sum(weights)
    starts = [sum(weights[:i]) / total for i in range(len(weights))]
    assert [s for s, _ in ranges] == pytest.approx(starts)
    assert [e - s for s, e in ranges] == pytest.approx([coverage * w / total for w in weights])
    assert bucket_ranges(weights)[-1][1] == 1.0  # every hash lands somewhere at full coverage


def test_choose() -> None:
    ranges = [(0.0, 0.25), (0.5, 0.75)]
    assert [choose(n, ranges) for n in (0.0, 0.2, 0.25, 0.5, 0.6, 0.75, 0.9)] == [
        0, 0, None, 1, 1, None, None,
    ]  # fmt: skip
    assert choose(0.5, [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0)]) == 2  # empty ranges hold nothing


@given(weights=weights_st, n=grid_st, low=st.floats(0.01, 1.0), high=st.floats(0.01, 1.0))
def test_raising_coverage_keeps_everyone_assigned(
    weights: list[int], n: float, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    before = choose(n, bucket_ranges(weights, low))
    assert before is None or choose(n, bucket_ranges(weights, high)) == before


def boundaries(weights: list[int]) -> list[float]:
    return [end for _, end in bucket_ranges(weights)]


@given(old=weights_st, new=weights_st, n=grid_st)
def test_weight_changes_move_only_customers_between_old_and_new_boundaries(
    old: list[int], new: list[int], n: float
) -> None:
    size = min(len(old), len(new))
    old, new = old[:size], new[:size]
    if choose(n, bucket_ranges(old)) != choose(n, bucket_ranges(new)):
        pairs = zip(boundaries(old), boundaries(new), strict=True)
        assert any(min(a, b) <= n < max(a, b) for a, b in pairs)


@given(head=weights_st, tail=st.lists(st.integers(1, 100), min_size=2, max_size=5), n=grid_st)
def test_changing_later_weights_keeps_earlier_variants(
    head: list[int], tail: list[int], n: float
) -> None:
    # The same total, a different split of the later share: earlier ranges do not move.
    reshuffled = tail[1:] + tail[:1]
    before = choose(n, bucket_ranges(head + tail))
    if before is not None and before < len(head):
        assert choose(n, bucket_ranges(head + reshuffled)) == before


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"salt": ""}, "salt"),
        ({"customer_id": ""}, "customer_id"),
        ({"variants": []}, "at least one variant"),
        ({"variants": [Variant("a", 1), Variant("a", 2)]}, "unique"),
        ({"coverage": 0.0}, "coverage"),
        ({"coverage": 1.5}, "coverage"),
        ({"coverage": math.nan}, "coverage"),
        ({"customer_id": "C\ud800"}, "customer_id is not valid Unicode"),
        ({"salt": "exp\udfff"}, "salt is not valid Unicode"),
    ],
)
def test_invalid_input_is_a_clear_value_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"salt": "s", "customer_id": "C1", "variants": HALF, **kwargs}
    with pytest.raises(ValueError, match=message):
        assign(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [0, -1, math.inf, math.nan])
def test_variant_weight_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Variant("a", weight)
    with pytest.raises(ValueError, match="weights"):
        bucket_ranges([1, weight])


def test_variant_key_and_weights_required() -> None:
    with pytest.raises(ValueError, match="key"):
        Variant("", 1)
    with pytest.raises(ValueError, match="weight"):
        bucket_ranges([])


# --- the chi-square helper against table values ----------------------------------------------


@pytest.mark.parametrize(
    ("x", "df", "p"),
    # critical values at p = 0.05 and 0.001 (any chi-square table)
    [(3.841459, 1, 0.05), (5.991465, 2, 0.05), (7.814728, 3, 0.05), (9.487729, 4, 0.05),
     (10.827566, 1, 0.001), (13.815511, 2, 0.001), (18.466827, 4, 0.001), (0.0, 3, 1.0)],
)  # fmt: skip
def test_chi2_sf_table_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-5)


def test_chi2_helpers_detect_a_mismatch() -> None:
    assert goodness_of_fit([5200, 4800], [1, 1]) < SRM_ALPHA  # 52/48 over 10,000 is an SRM
    assert independence([[600, 400], [400, 600]]) < SRM_ALPHA
    assert independence([[500, 500], [500, 500]]) == 1.0
