"""The circuit breaker under concurrency: the worker sends ``queue.concurrency`` (32)
messages at once, so when the circuit opens there are still sends in flight that were
allowed before it opened. Their outcomes are ignored: only the half-open probe's outcome
closes or re-opens the circuit."""

from __future__ import annotations

from channels.accounts import CircuitSettings
from channels.circuit import CircuitBreaker, CircuitState, Ticket

SETTINGS = CircuitSettings(error_rate=0.5, min_requests=4, window_seconds=30, open_seconds=30)


def state(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state  # read afresh each time (mypy would narrow the property)


def _tickets(breaker: CircuitBreaker, count: int) -> list[Ticket]:
    tickets = [breaker.allow() for _ in range(count)]
    assert all(ticket is not None for ticket in tickets)
    return [ticket for ticket in tickets if ticket is not None]


def test_a_straggler_success_does_not_close_a_freshly_opened_circuit() -> None:
    now = [0.0]
    breaker = CircuitBreaker(SETTINGS, clock=lambda: now[0])
    tickets = _tickets(breaker, 10)  # ten sends go out at once while the circuit is closed
    now[0] = 1.0
    for ticket in tickets[:4]:  # four of them fail: 4/4 >= 50% -> open
        breaker.record(ticket, failed=True)
    assert state(breaker) is CircuitState.open
    now[0] = 1.1
    breaker.record(tickets[4], failed=False)  # allowed before it opened
    assert state(breaker) is CircuitState.open  # until open_seconds pass and a probe decides


def test_only_the_probe_closes_the_circuit_and_stragglers_do_not_count_after() -> None:
    now = [0.0]
    breaker = CircuitBreaker(SETTINGS, clock=lambda: now[0])
    tickets = _tickets(breaker, 10)
    for ticket in tickets[:4]:
        breaker.record(ticket, failed=True)
    now[0] = 31.0  # half-open
    probe = breaker.allow()
    assert probe is not None
    assert probe.probe
    breaker.record(tickets[5], failed=False)  # a straggler ending meanwhile
    assert state(breaker) is CircuitState.half_open
    breaker.record(probe, failed=False)
    assert state(breaker) is CircuitState.closed
    for ticket in tickets[6:]:  # the old generation's failures: not against the closed one
        breaker.record(ticket, failed=True)
    assert state(breaker) is CircuitState.closed


def test_a_failed_probe_reopens_it() -> None:
    now = [0.0]
    breaker = CircuitBreaker(SETTINGS, clock=lambda: now[0])
    for ticket in _tickets(breaker, 4):
        breaker.record(ticket, failed=True)
    now[0] = 31.0
    probe = breaker.allow()
    assert probe is not None
    breaker.record(probe, failed=True)
    assert state(breaker) is CircuitState.open
    now[0] = 60.0
    assert breaker.allow() is None  # open for open_seconds from the failed probe


def test_a_degraded_provider_under_concurrency_is_kept_out() -> None:
    """A provider failing 3 sends in 4, each send taking 0.3 s, 100 sends started per second
    (about 30 in flight; the worker's default concurrency is 32): kept out but for one probe
    per open_seconds, not closed again by each straggler's success."""
    now = [0.0]
    breaker = CircuitBreaker(
        CircuitSettings(error_rate=0.5, min_requests=20, window_seconds=30, open_seconds=30),
        clock=lambda: now[0],
    )
    in_flight: list[tuple[float, Ticket, bool]] = []  # (ends at, ticket, failed?)
    skipped = sent = 0
    for i in range(12_000):  # two minutes
        now[0] = i * 0.01
        while in_flight and in_flight[0][0] <= now[0]:
            _, done, failed = in_flight.pop(0)
            breaker.record(done, failed=failed)
        ticket = breaker.allow()
        if ticket is not None:
            in_flight.append((now[0] + 0.3, ticket, sent % 4 != 3))
            sent += 1
        else:
            skipped += 1
    assert skipped > 10 * sent, (sent, skipped)
