"""Hypothesis strategies shared by the abtest tests."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def arms(draw: st.DrawFn, min_trials: int = 0) -> tuple[int, int]:
    """(successes, trials), mixing tiny samples (where edge cases live) with large ones."""
    trials = draw(
        st.one_of(st.integers(min_trials, 20), st.integers(max(min_trials, 1), 10_000_000))
    )
    successes = draw(
        st.one_of(
            st.integers(0, trials), st.sampled_from([0, trials]), st.integers(0, min(trials, 5))
        )
    )
    return successes, trials
