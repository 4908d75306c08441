"""``painvrl report``: the report of studies logged in MLflow (:mod:`painvrl.analysis.report`).

    painvrl report --experiment NAME [--compare NAME ...] [--tracking-uri URI] [--output DIR] [--format md]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from painvrl.errors import PainvrlInputError

DESCRIPTION = ("Report of PaInvRL studies logged in MLflow: Pareto front, hypervolume, per-environment metrics, "
               "mask density, hyperparameters along the front and (reported only) test metrics.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="MLflow experiment (study) name")
    parser.add_argument("--compare", nargs="+", default=[], metavar="NAME",
                        help="further experiments shown side by side with the first")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--output", type=Path, default=None,
                        help="output folder (default: ./report-<experiment>)")
    parser.add_argument("--format", choices=("html", "md"), default="html",
                        help="html: one self-contained file; md: Markdown + PNG files")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")


def run(args: argparse.Namespace) -> int:
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise PainvrlInputError("report: --tracking-uri is required when MLFLOW_TRACKING_URI is not set")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from painvrl.analysis.report import build_report

    output = args.output or Path(f"report-{args.experiment}")
    report = build_report(tracking_uri, [args.experiment, *args.compare], output, args.format,
                          log=not args.no_log)
    print(report.path)
    return 0
