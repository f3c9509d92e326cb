"""A circuit breaker per provider account: after too many transient failures the provider
is skipped for a while (failover goes to the next one), then one probe decides."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from channels.accounts import CircuitSettings


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


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

    def allow(self) -> bool:
        """May a request go to the provider now? In half-open state, one probe at a time."""
        state = self.state
        if state is CircuitState.closed:
            return True
        if state is CircuitState.half_open and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, *, failed: bool) -> None:
        now = self._clock()
        if self._opened_at is not None:
            self._probing = False
            if failed:
                self._opened_at = now  # the probe failed: stay open
            else:
                self._opened_at = None
                self._outcomes.clear()
                self._failures = 0
            return
        self._outcomes.append((now, failed))
        self._failures += failed
        self._trim(now)
        if self._should_open():
            self._opened_at = now

    def _trim(self, now: float) -> None:
        horizon = now - self._settings.window_seconds
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._failures -= self._outcomes.popleft()[1]

    def _should_open(self) -> bool:
        total = len(self._outcomes)
        if total < self._settings.min_requests:
            return False
        return self._failures / total >= self._settings.error_rate
