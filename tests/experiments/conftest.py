from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.experiments import patching


@pytest.fixture(autouse=True)
def _fresh_experiment_cache() -> Iterator[None]:
    """The send-time cache of live experiments is per process: none leaks between tests."""
    patching.clear_cache()
    yield
    patching.clear_cache()
