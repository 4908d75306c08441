"""A finished study's pictures: front.png and the HTML report, written beside front.csv and logged to the
study's parent MLflow run. Called by the study's entry points after :func:`painvrl.study.driver.run_study`."""

from __future__ import annotations

import logging
from pathlib import Path

from painvrl.study.driver import StudyOutcome

logger = logging.getLogger(__name__)


def reference_marker(outcome: StudyOutcome) -> tuple[str, float, float] | None:
    """The study's reference point as the front plot draws it ``(label, x, y)``, on the plot's first two
    objectives; None when it has no label (a baseline row, drawn with the baselines, or the origin)."""
    if outcome.reference_label is None or not outcome.reference_point:
        return None
    point = outcome.reference_point
    return outcome.reference_label, float(point[0]), float(point[1] if len(point) > 1 else point[0])


def publish_study(outcome: StudyOutcome) -> list[Path]:
    """Draw and log the front plot and the study report; returns the paths written.

    A figure that cannot be drawn is logged as a warning: the numbers (front.csv, trials.csv, metrics) are
    already in MLflow, and a plot must never fail a finished study."""
    from painvrl.study import tracking

    spec, written = outcome.spec, []
    keys, directions = spec.metric_keys(), spec.directions()
    study_dir = spec.study_dir()
    try:
        from painvrl.analysis.plots import plot_front
        from painvrl.study.baselines import baseline_markers

        y = keys[1] if len(keys) > 1 else keys[0]
        png = plot_front(outcome.trials, keys[0], y, directions, study_dir / "front.png",
                         title=f"{spec.name}: Pareto front ({len(outcome.front)} of {len(outcome.trials)} trials)",
                         markers=baseline_markers(outcome.baselines, keys[0], y),
                         reference=reference_marker(outcome))
        tracking._client(outcome.tracking_uri).log_artifact(outcome.parent_run_id, str(png))
        written.append(Path(png))
    except Exception as exc:
        logger.warning("could not draw the front: %s", exc)
    try:  # fronts, per-environment metrics and masks, logged beside the front
        from painvrl.analysis.report import build_report

        written.append(build_report(outcome.tracking_uri, [spec.name], study_dir / "report").path)
    except Exception as exc:
        logger.warning("could not build the study report: %s", exc)
    return written
