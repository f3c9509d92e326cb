"""The pure assignment (abtest/assignment.py) for a stored experiment."""

from __future__ import annotations

from abtest.assignment import Assigner, Variant
from app.experiments.models import Experiment


def assigner(experiment: Experiment) -> Assigner:
    """Deterministic variant per customer: weights and coverage as configured. Once a winner
    is chosen, callers send everyone in the sample to it (see :func:`variant_for`)."""
    return Assigner(
        salt=experiment.salt,
        variants=[Variant(v["key"], float(v["weight"])) for v in experiment.variants],
        coverage=experiment.coverage,
    )


def variant_for(experiment: Experiment, assigned: Assigner, customer_id: str) -> str | None:
    """The variant ``customer_id`` gets now: None outside the sample, the winner once one is
    chosen, else the hashed variant."""
    key = assigned.assign(customer_id)
    if key is None or experiment.winner is None:
        return key
    return experiment.winner
