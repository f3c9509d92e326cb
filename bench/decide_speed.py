"""Benchmark: `decide()` alone, 200 strategies over 50 segments, one core.

Profiles are drawn once (aum, tier, tags); segments are real compiled rule predicates
(strategies.rules + strategies.predicate), strategies have priorities, some hours windows and
frequency caps. Figures, in the same run:

- baseline: evaluating the 50 segment predicates once per profile (the least any engine that
  must know which segments a customer is in would do);
- the send path: `Ruleset.decide()` (first match by priority, shared segments evaluated once);
- the explain path: `decide()` with every strategy's verdict.

Printed: decisions/s of each, and the send path against the aim of 50,000/s per core.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bench._support import header, row, run_main
from strategies.attributes import AttributeSchema, AttributeType
from strategies.decide import Customer, FrequencyCap, HourWindow, Ruleset, Strategy, decide
from strategies.predicate import compile_predicate
from strategies.rules import validate

AIM = 50_000
SECONDS = 2.0
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
SCHEMA = AttributeSchema(
    {"aum": AttributeType.number, "tier": AttributeType.string, "tags": AttributeType.string_list}
)


def segments(count: int) -> list[Callable[..., bool]]:
    rules = []
    for i in range(count):
        rule: dict[str, object] = {"field": "aum", "op": "gte", "value": 10_000 * (1 + i % 25) ** 2}
        if i >= 25:
            rule = {
                "all": [
                    rule,
                    {"field": "tier", "op": "eq", "value": ("private", "mass")[i % 2]},
                    {"not": {"field": "tags", "op": "contains", "value": "staff"}},
                ]
            }
        rules.append(compile_predicate(validate(rule, SCHEMA)))
    return rules


def strategies(predicates: list[Callable[..., bool]], count: int) -> list[Strategy]:
    from datetime import time as clock

    return [
        Strategy(
            key=f"s{i:03d}",
            scenario="account_movement",
            segment=f"seg{(i * 7) % len(predicates)}",
            matches=predicates[(i * 7) % len(predicates)],
            patch_templates={"sms": f"patch{i % 4}"},
            priority=count - i,
            hours=HourWindow(clock(8), clock(22)) if i % 5 == 0 else None,
            cap=FrequencyCap(3, 7) if i % 3 == 0 else None,
        )
        for i in range(count)
    ]


def customers(count: int) -> list[Customer]:
    rng = random.Random(7)
    return [
        Customer(
            {
                "aum": rng.choice([0, 5_000, 80_000, 300_000, 700_000, 2_000_000]),
                "tier": rng.choice(["mass", "private", "affluent"]),
                "tags": rng.choice([[], ["staff"], ["payroll"]]),
            },
            recent_patches=[NOW - timedelta(days=d) for d in range(rng.randint(0, 4))],
        )
        for _ in range(count)
    ]


def rate(step: Callable[[Customer], object], people: list[Customer]) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        for person in people:
            step(person)
        done += len(people)
    return done / (time.perf_counter() - started)


def body() -> None:
    predicates = segments(50)
    rules = strategies(predicates, 200)
    people = customers(500)
    ruleset = Ruleset(rules)
    header("decide_speed: 200 strategies over 50 segments", f"{len(people)} profiles, one core")

    def baseline(person: Customer) -> object:
        return [p(person.profile) for p in predicates]

    def send_path(person: Customer) -> object:
        return ruleset.decide(person, scenario="account_movement", channel="sms", now=NOW)

    def explain_path(person: Customer) -> object:
        return decide(rules, person, scenario="account_movement", channel="sms", now=NOW)

    patched = sum(send_path(p).winner is not None for p in people)  # type: ignore[attr-defined]
    base, fast, full = rate(baseline, people), rate(send_path, people), rate(explain_path, people)
    row("baseline: 50 segment predicates", f"{base:,.0f} profiles/s")
    row("send path: Ruleset.decide", f"{fast:,.0f} decisions/s ({fast / base:.2f}x baseline)")
    row("explain path: decide", f"{full:,.0f} decisions/s")
    row("patched", f"{patched / len(people):.0%} of profiles")
    verdict = "meets" if fast >= AIM else "BELOW"
    row("send path against the aim", f"{fast / AIM:.2f}x of {AIM:,}/s ({verdict})")


def main() -> int:
    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
