"""Garbage-collector tuning for long-running server and worker processes.

Profiles of `icc serve` under load showed a third of the main thread in the cyclic collector,
re-scanning the large, permanent heap that imports and start-up leave behind (SQLAlchemy
metadata, pydantic schemas, compiled templates). Freezing that heap takes it out of every
later collection; a larger first-generation threshold makes young collections rarer.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # CPython's default is 700 allocations


def freeze_startup_heap() -> None:
    """Call once the process has started up (imports done, app and runtime built)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
