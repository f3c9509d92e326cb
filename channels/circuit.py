"""A circuit breaker per provider account: after too many failures the provider is skipped
for a while (failover goes to the next one), then one probe decides.

Sends run concurrently (``queue.concurrency`` at a time), so when the circuit opens, sends
allowed before are still in flight. Each send gets a ``Ticket`` from ``allow()`` naming the
circuit's generation (it changes whenever the circuit opens or closes); an outcome of an
earlier generation says nothing about the provider now and is ignored: a straggler's success
does not close a circuit that just opened, nor does its failure count against a circuit the
probe closed. Only the probe's outcome closes or re-opens the circuit."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

from channels.accounts import CircuitSettings


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class Ticket(NamedTuple):
    """A send's leave from ``allow()``, handed back with its outcome to ``record()``."""

    generation: int
    probe: bool


class CircuitBreaker:
    def __init__(
        self, settings: CircuitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed)
        self._failures = 0  # failures in _outcomes, kept as it changes (this is per send)
        self._opened_at: float | None = None
        self._probing = False
        self._generation = 0

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.closed
        if self._clock() - self._opened_at < self._settings.open_seconds:
            return CircuitState.open
        return CircuitState.half_open

    def refuses(self) -> bool:
        """Would ``allow()`` refuse now (open, or half-open with its probe out)? Takes no
        probe: a send asks this before it waits for the provider's rate limit, so messages
        fail over at once instead of queueing for a provider they will not use."""
        state = self.state
        return state is CircuitState.open or (state is CircuitState.half_open and self._probing)

    def allow(self) -> Ticket | None:
        """A ticket if a request may go to the provider now, else None. In half-open state,
        one probe at a time."""
        state = self.state
        if state is CircuitState.closed:
            return Ticket(self._generation, probe=False)
        if state is CircuitState.half_open and not self._probing:
            self._probing = True
            return Ticket(self._generation, probe=True)
        return None

    def record(self, ticket: Ticket, *, failed: bool) -> None:
        """The outcome of the send ``ticket`` let through."""
        if ticket.generation != self._generation:
            return  # allowed before the circuit last opened or closed
        now = self._clock()
        if ticket.probe:
            self._probing = False
            if failed:
                self._open(now)
            else:
                self._close()
            return
        self._outcomes.append((now, failed))
        self._failures += failed
        self._trim(now)
        if self._should_open():
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._generation += 1

    def _close(self) -> None:
        self._opened_at = None
        self._outcomes.clear()
        self._failures = 0
        self._generation += 1

    def _trim(self, now: float) -> None:
        horizon = now - self._settings.window_seconds
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._failures -= self._outcomes.popleft()[1]

    def _should_open(self) -> bool:
        total = len(self._outcomes)
        if total < self._settings.min_requests:
            return False
        return self._failures / total >= self._settings.error_rate
