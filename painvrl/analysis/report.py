"""Study report over MLflow (``painvrl report --experiment NAME [--compare NAME ...]``).

Loads each study (:func:`painvrl.analysis.report_data.load_study_runs`), draws the figures, writes a
self-contained ``report.html`` (PNGs embedded as base64) or ``report.md`` + PNGs into the output folder, and logs
the report folder to the first study's parent run under the artifact path ``report/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from painvrl.analysis.report_data import StudyRuns, load_study_runs
from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

__all__ = ["REPORT_ARTIFACT_PATH", "Report", "build_report", "log_report", "write_report"]

REPORT_ARTIFACT_PATH = "report"
"""Artifact folder of the parent run that holds the logged report."""


@dataclass
class Report:
    path: Path
    """The report file (report.html or report.md)."""
    output_dir: Path
    studies: list[StudyRuns]


def write_report(studies: list[StudyRuns], output_dir: Path, fmt: str = "html") -> Report:
    """Write the report of ``studies`` (the first is the primary one) into ``output_dir``."""
    from painvrl.analysis.report_html import build_sections, render_html, render_markdown

    if not studies:
        raise PainvrlInputError("a report needs at least one study")
    if fmt not in ("html", "md"):
        raise PainvrlInputError(f"report format {fmt!r}: expected 'html' or 'md'")
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = output_dir if fmt == "md" else output_dir / "figures"
    sections = build_sections(studies, figures)
    names = ", ".join(s.name for s in studies)
    title = f"PaInvRL study report: {names}"
    if fmt == "html":
        path = output_dir / "report.html"
        path.write_text(render_html(sections, title), encoding="utf-8")
    else:
        path = output_dir / "report.md"
        path.write_text(render_markdown(sections, title, output_dir), encoding="utf-8")
    logger.info("wrote %s", path)
    return Report(path, output_dir, studies)


def log_report(report: Report) -> None:
    """Log the report folder to the primary study's parent run (artifact path ``report/``)."""
    from mlflow.tracking import MlflowClient

    study = report.studies[0]
    client = MlflowClient(tracking_uri=study.tracking_uri)
    client.log_artifacts(study.parent_run_id, str(report.output_dir), artifact_path=REPORT_ARTIFACT_PATH)
    logger.info("logged the report to run %s/%s", study.parent_run_id, REPORT_ARTIFACT_PATH)


def build_report(tracking_uri: str, experiments: list[str], output_dir: Path, fmt: str = "html",
                 log: bool = True) -> Report:
    """Load ``experiments`` from ``tracking_uri``, write the report and (unless ``log`` is False) log it."""
    studies = [load_study_runs(tracking_uri, name) for name in experiments]
    report = write_report(studies, output_dir, fmt)
    if log:
        log_report(report)
    return report
