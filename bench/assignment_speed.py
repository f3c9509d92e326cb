"""Benchmark: experiment assignment alone (`abtest.assignment`), one core.

100,000 customer ids of the usual shape (`C0000000`...), a 10/45/45 experiment. Figures, in the
same run:

- baseline: the bare `fnv1a32` of each id (one pass of FNV-1a over the id's bytes; the least any
  hash-based assignment must do);
- raw hash v2: `hash_v2(salt, id)` (both FNV-1a rounds of GrowthBook's v2, salt included);
- the project's path for many customers: `Assigner.assign` (salt state and ranges prepared once);
- the one-off call: `assign(...)` (validates and builds the ranges on every call).

Printed: assignments/s of each and their ratio to the baseline. Aim: 100,000/s per core for
`Assigner.assign`, so assigning a campaign's 1,000,000 customers takes seconds, not minutes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from abtest.assignment import Assigner, Variant, assign, fnv1a32, hash_v2
from bench._support import header, ratio_text, row, run_main

AIM = 100_000
SECONDS = 2.0
SALT = "exp-2026-11-wealth"
VARIANTS = [Variant("holdout", 10), Variant("sms_wealth", 45), Variant("wechat_wealth", 45)]


def rate(step: Callable[[str], object], ids: list[str]) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        for customer_id in ids:
            step(customer_id)
        done += len(ids)
    return done / (time.perf_counter() - started)


def body() -> None:
    ids = [f"C{i:07d}" for i in range(100_000)]
    assigner = Assigner(salt=SALT, variants=VARIANTS)
    header("assignment_speed: 10/45/45 experiment", f"{len(ids):,} ids, one core")

    def one_off(customer_id: str) -> object:
        return assign(salt=SALT, customer_id=customer_id, variants=VARIANTS)

    base = rate(fnv1a32, ids)
    raw = rate(lambda c: hash_v2(SALT, c), ids)
    fast = rate(assigner.assign, ids)
    slow = rate(one_off, ids)
    row("baseline: bare fnv1a32 of the id", f"{base:,.0f} hashes/s")
    row("raw hash_v2(salt, id)", f"{raw:,.0f} hashes/s ({ratio_text(raw, base)} baseline)")
    row("Assigner.assign", f"{fast:,.0f} assignments/s ({ratio_text(fast, base)} baseline)")
    row("assign() one-off", f"{slow:,.0f} assignments/s ({ratio_text(slow, base)} baseline)")
    verdict = "meets" if fast >= AIM else "BELOW"
    row("Assigner.assign against the aim", f"{fast / AIM:.2f}x of {AIM:,}/s ({verdict})")


def main() -> int:
    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
