"""The pure strategy decision: priority, windows, channels, segments, caps, consent, quiet hours."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.decide import (
    Customer,
    FrequencyCap,
    HourWindow,
    NoPatch,
    Reason,
    Ruleset,
    Strategy,
    decide,
)

# 2026-11-23 10:00 in Shanghai
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
QUIET = HourWindow(time(21), time(8))


def rich(profile: Mapping[str, Any]) -> bool:
    return bool(profile.get("aum", 0) >= 500_000)


def modest(profile: Mapping[str, Any]) -> bool:
    return bool(profile.get("aum", 0) < 50_000)


def strategy(key: str, matches: Any = rich, **options: Any) -> Strategy:
    values: dict[str, Any] = {
        "scenario": "account_movement",
        "segment": f"seg_{key}",
        "patch_templates": {"sms": f"patch_{key}", "email": f"mail_{key}"},
    }
    values.update(options)
    return Strategy(key=key, matches=matches, **values)


def run(strategies: list[Strategy], customer: Customer, **options: Any) -> Any:
    values: dict[str, Any] = {"scenario": "account_movement", "channel": "sms", "now": NOW}
    values.update(options)
    return decide(strategies, customer, **values)


def test_the_segment_picks_the_patch_high_net_worth_wealth_low_net_worth_loan() -> None:
    wealth = strategy("wealth", rich, priority=1)
    loan = strategy("loan", modest, priority=2)
    assert run([wealth, loan], Customer({"aum": 800_000})).winner is wealth
    assert run([wealth, loan], Customer({"aum": 10_000})).winner is loan
    middle = run([wealth, loan], Customer({"aum": 100_000}))
    assert middle.winner is None
    assert middle.no_patch is NoPatch.no_strategy
    assert [e.reason for e in middle.evaluations] == [Reason.segment_not_matched] * 2


def test_opted_out_customers_get_nothing_whatever_their_segment() -> None:
    decision = run([strategy("wealth")], Customer({"aum": 800_000}, marketing_allowed=False))
    assert decision.winner is None
    assert decision.no_patch is NoPatch.opted_out
    assert decision.record()["no_patch"] == "opted_out"


def test_quiet_hours_drop_the_patch_of_immediate_sends_in_the_customers_timezone() -> None:
    late = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai, 14:30 in London
    shanghai = Customer({"aum": 800_000})
    london = Customer({"aum": 800_000}, timezone="Europe/London")
    assert (
        run([strategy("w")], shanghai, now=late, quiet_hours=QUIET).no_patch is NoPatch.quiet_hours
    )
    assert run([strategy("w")], london, now=late, quiet_hours=QUIET).winner is not None
    # a scheduled send is decided for its own time, not held to the quiet hours of now
    assert run([strategy("w")], shanghai, now=late, quiet_hours=QUIET, immediate=False).winner


def test_priority_then_key_decides_and_later_strategies_are_not_tried() -> None:
    b = strategy("b", priority=5)
    a = strategy("a", priority=5)
    first = strategy("z", priority=1)
    decision = run([b, a, first], Customer({"aum": 900_000}))
    assert decision.winner is first
    assert [(e.strategy, e.reason) for e in decision.evaluations] == [
        ("z", Reason.matched),
        ("a", Reason.not_tried),
        ("b", Reason.not_tried),
    ]


def test_windows_channels_and_status_each_say_why() -> None:
    customer = Customer({"aum": 900_000})
    cases = [
        (strategy("s", active=False), Reason.inactive),
        (strategy("s", starts_at=NOW + timedelta(days=1)), Reason.before_start),
        (strategy("s", ends_at=NOW), Reason.after_end),
        (strategy("s", hours=HourWindow(time(12), time(18))), Reason.outside_hours),
        (strategy("s", channels=frozenset({"wechat"})), Reason.channel_not_allowed),
    ]
    for item, reason in cases:
        [evaluation] = run([item], customer).evaluations
        assert evaluation.reason is reason
    inside = strategy("s", hours=HourWindow(time(9), time(11)), channels=frozenset({"sms"}))
    assert run([inside], customer).winner is inside


def test_the_frequency_cap_counts_patches_of_every_strategy_within_its_period() -> None:
    capped = strategy("w", cap=FrequencyCap(max_patches=2, days=7))
    recent = [NOW - timedelta(days=1), NOW - timedelta(days=6)]
    decision = run([capped], Customer({"aum": 900_000}, recent_patches=recent))
    assert decision.evaluations[0].reason is Reason.frequency_capped
    older = [NOW - timedelta(days=1), NOW - timedelta(days=8)]
    assert run([capped], Customer({"aum": 900_000}, recent_patches=older)).winner is capped


def test_other_scenarios_strategies_are_ignored() -> None:
    other = strategy("o", scenario="salary_credit")
    decision = run([other], Customer({"aum": 900_000}))
    assert decision.winner is None
    assert decision.evaluations == []


def test_the_record_is_plain_json() -> None:
    record = run([strategy("w", experiment="exp1")], Customer({"aum": 900_000})).record()
    assert record == {
        "strategy": "w",
        "patch_template": "patch_w",
        "experiment": "exp1",
        "no_patch": None,
        "evaluations": [{"strategy": "w", "matched": True, "reason": "matched"}],
    }


@given(
    start=st.integers(0, 23),
    end=st.integers(0, 23),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
)
def test_an_hour_window_wraps_midnight(start: int, end: int, hour: int, minute: int) -> None:
    window = HourWindow(time(start), time(end))
    at = hour * 60 + minute
    lo, hi = start * 60, end * 60
    expected = True if lo == hi else (lo <= at < hi if lo < hi else at >= lo or at < hi)
    assert window.contains(time(hour, minute)) is expected


@given(
    aums=st.lists(st.integers(0, 2_000_000), min_size=1, max_size=6), aum=st.integers(0, 2_000_000)
)
def test_the_winner_is_the_first_matching_by_priority(aums: list[int], aum: int) -> None:
    items = [
        strategy(f"s{i}", (lambda p, t=t: p["aum"] >= t), priority=len(aums) - i)
        for i, t in enumerate(aums)
    ]
    decision = run(items, Customer({"aum": aum}))
    matching = sorted((s for s in items if s.matches({"aum": aum})), key=lambda s: s.priority)
    assert decision.winner is (matching[0] if matching else None)
    assert sum(e.matched for e in decision.evaluations) == (1 if matching else 0)


def test_the_issues_example_segments_choose_the_patch_from_a_profile() -> None:
    from strategies.attributes import AttributeSchema, AttributeType
    from strategies.predicate import compile_predicate
    from strategies.rules import validate

    schema = AttributeSchema({"aum": AttributeType.number, "tags": AttributeType.string_list})
    high = validate(
        {
            "all": [
                {"field": "aum", "op": "gte", "value": 500000},
                {"not": {"field": "tags", "op": "contains", "value": "staff"}},
            ]
        },
        schema,
    )
    low = validate({"field": "aum", "op": "lt", "value": 50000}, schema)
    wealth = strategy("wealth", compile_predicate(high), priority=1)
    loan = strategy("loan", compile_predicate(low), priority=2)
    assert run([wealth, loan], Customer({"aum": 800000, "tags": ["payroll"]})).winner is wealth
    assert run([wealth, loan], Customer({"aum": 800000, "tags": ["staff"]})).winner is None
    assert run([wealth, loan], Customer({"aum": 12000})).winner is loan


@settings(max_examples=300)
@given(
    thresholds=st.lists(st.integers(0, 2_000_000), min_size=1, max_size=12),
    aum=st.integers(0, 2_000_000),
    flags=st.lists(
        st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=12, max_size=12
    ),
    recent_days=st.lists(st.integers(0, 10), max_size=4),
    hour=st.integers(0, 23),
    windows=st.lists(st.sampled_from(["open", "future", "past"]), min_size=12, max_size=12),
)
def test_the_ruleset_fast_path_picks_the_same_winner_as_decide(
    thresholds: list[int],
    aum: int,
    flags: list[tuple[bool, bool, bool]],
    recent_days: list[int],
    hour: int,
    windows: list[str],
) -> None:
    items = []
    for i, t in enumerate(thresholds):
        active, sms_only, capped = flags[i]
        items.append(
            strategy(
                f"s{i:02d}",
                # strategies share segments (one threshold per segment)
                (lambda p, t=thresholds[i % 5]: p["aum"] >= t),
                segment=f"seg_{i % 5}",
                priority=i % 4,
                active=active,
                channels=frozenset({"sms"}) if sms_only else None,
                cap=FrequencyCap(1, 3) if capped else None,
                hours=HourWindow(time(8), time(20)) if i % 2 else None,
                starts_at=NOW + timedelta(days=1) if windows[i] == "future" else None,
                ends_at=NOW - timedelta(days=1) if windows[i] == "past" else None,
            )
        )
    now = NOW.replace(hour=hour)
    recent = [now - timedelta(days=d, hours=1) for d in recent_days]
    customer = Customer({"aum": aum}, recent_patches=recent)
    rules = Ruleset(items)
    for channel in ("sms", "email"):
        slow = decide(items, customer, scenario="account_movement", channel=channel, now=now)
        fast = rules.decide(customer, scenario="account_movement", channel=channel, now=now)
        assert fast.winner is slow.winner
        assert fast.no_patch is slow.no_patch
        held = _held_before_winner(items, customer, channel, now, slow.winner)
        assert [(e.strategy, e.reason) for e in fast.evaluations if not e.matched] == held
        explained = rules.decide(
            customer, scenario="account_movement", channel=channel, now=now, explain=True
        )
        assert explained.evaluations == slow.evaluations


def _fast(items: list[Strategy], customer: Customer) -> Any:
    return Ruleset(items).decide(customer, scenario="account_movement", channel="sms", now=NOW)


def test_the_fast_path_keeps_priority_order_across_shared_segments() -> None:
    """Segments are evaluated group by group; the winner is still the first strategy in
    priority order, and only strategies before it are reported as held back."""
    future = NOW + timedelta(days=1)
    capped = FrequencyCap(1, 7)
    recent = Customer({"aum": 1_000_000}, recent_patches=[NOW - timedelta(days=1)])
    a, b = (lambda p: p["aum"] > 0), (lambda p: p["aum"] > 10)
    items = [
        strategy("k0", a, segment="A", priority=0, starts_at=future),
        strategy("k1", b, segment="B", priority=1, starts_at=future),
        strategy("k2", b, segment="B", priority=2),
        strategy("k3", a, segment="A", priority=3, cap=capped),
        strategy("k5", a, segment="A", priority=5),
    ]
    decision = _fast(items, recent)
    assert decision.winner is items[2]  # not k5, found first while scanning segment A
    assert [e.strategy for e in decision.evaluations] == ["k2"]  # k3 comes after the winner
    later = [items[0], items[1], strategy("k6", b, segment="B", priority=6), *items[3:]]
    decision = _fast(later, recent)
    assert decision.winner is later[-1]  # k5 before k6, though segment B is scanned after
    assert [(e.strategy, e.reason) for e in decision.evaluations] == [
        ("k3", Reason.frequency_capped),
        ("k5", Reason.matched),
    ]
    for case in (items, later):
        slow = decide(case, recent, scenario="account_movement", channel="sms", now=NOW)
        assert _fast(case, recent).winner is slow.winner


def _received_within(customer: Customer, now: datetime, cap: FrequencyCap) -> int:
    return sum(1 for at in customer.recent_patches if at > now - timedelta(days=cap.days))


def _held_before_winner(
    items: list[Strategy], customer: Customer, channel: str, now: datetime, winner: Any
) -> list[tuple[str, Reason]]:
    """What the fast path records besides the winner: the candidates before it, in priority
    order, whose segment matched and whose window was open, held back by hours or cap."""
    held = []
    for s in sorted(items, key=lambda s: (s.priority, s.key)):
        if s is winner:
            break
        if not s.active or (s.channels is not None and channel not in s.channels):
            continue
        if not s.matches(customer.profile):
            continue
        if (s.starts_at is not None and now < s.starts_at) or (
            s.ends_at is not None and now >= s.ends_at
        ):
            continue
        local = now.astimezone(ZoneInfo("Asia/Shanghai")).time()
        if s.hours is not None and not s.hours.contains(local):
            held.append((s.key, Reason.outside_hours))
        elif (
            s.cap is not None
            and sum(1 for at in customer.recent_patches if at > now - timedelta(days=s.cap.days))
            >= s.cap.max_patches
        ):
            held.append((s.key, Reason.frequency_capped))
    return held


def test_the_ruleset_evaluates_a_shared_segment_once() -> None:
    calls: list[int] = []

    def counted(profile: Mapping[str, Any]) -> bool:
        calls.append(1)
        return False

    items = [strategy(f"s{i}", counted, segment="shared", priority=i) for i in range(20)]
    decision = Ruleset(items).decide(
        Customer({"aum": 1}), scenario="account_movement", channel="sms", now=NOW
    )
    assert decision.no_patch is NoPatch.no_strategy
    assert len(calls) == 1
