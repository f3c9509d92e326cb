"""An experiment's report: abtest's report (abtest/report.py, every statistic) computed with the
stored experiment's settings, plus what only the database knows (lifecycle, setup, the recorded
winner). Pure: the counts come from report_repository, the time from the caller.

- ``report_settings(experiment)``: the ``ReportSettings`` the report and the auto-winner use;
- ``experiment_report(experiment, arms, daily, now=...)``: the JSON-ready document.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from abtest.counts import ArmCounts, DailyCounts
from abtest.report import Report, ReportSettings, VariantSettings, build_report
from app.experiments.models import Experiment


def _variant(spec: dict[str, Any]) -> VariantSettings:
    return VariantSettings(
        key=str(spec["key"]),
        weight=float(spec.get("weight") or 0.0),
        channel=spec.get("channel"),
        template=spec.get("template"),
        format=spec.get("format"),
    )


def report_settings(experiment: Experiment) -> ReportSettings:
    """The experiment's settings as abtest takes them. Raises ValueError when the stored
    configuration is not one a report can be computed with (the API never stores such)."""
    return ReportSettings(
        experiment_key=experiment.key,
        control=experiment.control,
        variants=tuple(_variant(v) for v in experiment.variants),
        metric=experiment.metric,
        confidence=experiment.confidence,
        min_sample=experiment.min_sample,
        target_lift=experiment.target_lift,
        attribution_hours=experiment.attribution_hours,
    )


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def stored_fields(experiment: Experiment, now: datetime) -> Report:
    """What the report adds from the experiment's row: ``lifecycle`` (status and its times),
    ``setup`` (kind, segment, strategy, sample, conversion event, auto-winner), the recorded
    ``winner`` and ``winner_decision`` (None until decided), and ``generated_at``."""
    return {
        "generated_at": now.isoformat(),
        "lifecycle": {
            "status": experiment.status,
            "created_at": _time(experiment.created_at),
            "started_at": _time(experiment.started_at),
            "stopped_at": _time(experiment.stopped_at),
            "completed_at": _time(experiment.completed_at),
        },
        "setup": {
            "kind": experiment.kind,
            "segment": experiment.segment,
            "strategy": experiment.strategy,
            "coverage": experiment.coverage,
            "sample_size": experiment.sample_size,
            "conversion_event": experiment.conversion_event,
            "auto_winner": experiment.auto_winner,
        },
        "winner": experiment.winner,
        "winner_decision": experiment.winner_decision,
    }


def experiment_report(
    experiment: Experiment,
    arms: Sequence[ArmCounts],
    daily: Sequence[DailyCounts],
    *,
    now: datetime,
) -> Report:
    """abtest's report of ``arms`` and ``daily`` with the experiment's settings, plus
    :func:`stored_fields`. Raises ValueError on inconsistent counts or settings."""
    report = build_report(report_settings(experiment), arms, daily)
    return {**report, **stored_fields(experiment, now)}
