"""Run a PaInvRL study: Ray Tune + Optuna multi-objective search, every trial and the front in MLflow.

    python tune/search.py                                  # default study (synthetic, local Ray, sqlite MLflow)
    python tune/search.py --config tune/configs/smoke.yaml --set num_samples=4
    python tune/search.py --config ... --resume            # continue a killed study
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python tune/search.py --config ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="study YAML: base run config, search space, objectives, sampler, budget, storage "
                             "(default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study field, e.g. num_samples=4, name=my-study, storage_dir=/tmp/runs or "
                             "base.train.epochs=3 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study stored under storage_dir/name (a killed or finished study)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray Tune's trial tables and the libraries' own logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from painvrl.console import configure_logging

    configure_logging(args.verbose)
    from painvrl.errors import PainvrlInputError
    from painvrl.study.spec import load_study

    try:
        spec = load_study(args.config, args.overrides)
        from painvrl.study.driver import describe_study, mlflow_ui_command, mlflow_ui_url, run_study

        print(describe_study(spec, resume=args.resume), flush=True)
        outcome = run_study(spec, resume=args.resume, verbose=args.verbose)
        from painvrl.analysis.publish import publish_study

        publish_study(outcome)
    except PainvrlInputError as exc:
        print(f"search.py: error: {exc}", file=sys.stderr)
        return 2
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.precision", 4):
        print(f"\nPareto front of study '{spec.name}' ({len(outcome.front)} of {len(outcome.trials)} trials):")
        print(outcome.front.drop(columns=["on_front", "on_optuna_front"], errors="ignore").to_string(index=False))
        if outcome.baselines is not None:
            print("\nerm baselines (mean over seeds; validation objectives, test reported, never used to choose):")
            print(outcome.baselines.to_string(index=False))
    print(f"hypervolume = {outcome.hypervolume:.6g} (reference point {outcome.reference_point})")
    if outcome.hypervolume == 0:
        if outcome.baselines is not None and spec.reference_point is None:
            which = "the best baseline's point"
        elif spec.erm_baseline and spec.reference_point is None:
            which = "the erm baseline's point"
        else:
            which = "it"
        print(f"  (0: no trial is better than the reference point, {which}, in every objective at once)")
    print(f"results: {spec.study_dir()} (front.csv, trials.csv, {'baselines.csv, ' if spec.baselines else ''}"
          "front.png, report/report.html)")
    print(f"MLflow UI: {mlflow_ui_command(outcome.tracking_uri)}")
    print(f"  then open {mlflow_ui_url(outcome.tracking_uri, outcome.parent_run_id, spec.metric_keys())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
