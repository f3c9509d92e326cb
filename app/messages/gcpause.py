"""The cyclic garbage collector paused while one batch is accepted.

A batch of 10,000 messages keeps some 300,000 containers alive until it is answered (validated
items, rows, answers). The collector, triggered by their allocation, scanned them again and
again while they were being made (young and middle generations): about 90 ms of a batch's
500 ms of CPU in `icc serve` on PostgreSQL, for nothing, since they are freed by reference
counting once the batch is answered. Paused, the collector finds them gone when it resumes.

The pause is bounded by that one batch (the batch that paused it resumes it, in ``finally``), so
garbage cycles that concurrent requests leave meanwhile wait at most that long. If the collector
was already off (a test, a debugger), it is left off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    if not gc.isenabled():  # off already, maybe by an overlapping batch: that one resumes it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
