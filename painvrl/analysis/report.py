"""Study report over MLflow: ``python analysis/report.py --experiment NAME [--compare NAME ...]``.

Loads each study (:func:`painvrl.analysis.report_data.load_study_runs`), draws the figures, writes a
self-contained ``report.html`` (PNGs embedded as base64) or ``report.md`` + PNGs into the output folder, and logs
the report folder to the first study's parent run under the artifact path ``report/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from painvrl.analysis.report_data import StudyRuns, load_study_runs
from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

__all__ = ["REPORT_ARTIFACT_PATH", "Report", "build_report", "log_report", "main", "write_report"]

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analysis/report.py", description=(
        "Report of PaInvRL studies logged in MLflow: Pareto front, hypervolume, per-environment metrics, mask "
        "density, hyperparameters along the front and (reported only) test metrics."))
    parser.add_argument("--experiment", required=True, help="MLflow experiment (study) name")
    parser.add_argument("--compare", nargs="+", default=[], metavar="NAME",
                        help="further experiments shown side by side with the first")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--output", type=Path, default=None,
                        help="output folder (default: ./report-<experiment>)")
    parser.add_argument("--format", choices=("html", "md"), default="html",
                        help="html: one self-contained file; md: Markdown + PNG files")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input such as an unknown experiment)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.tracking_uri:
        parser.error("--tracking-uri is required when MLFLOW_TRACKING_URI is not set")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = args.output or Path(f"report-{args.experiment}")
    try:
        report = build_report(args.tracking_uri, [args.experiment, *args.compare], output, args.format,
                              log=not args.no_log)
    except PainvrlInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.path)
    return 0
