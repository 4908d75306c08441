"""``painvrl study``: a PaInvRL study (Ray Tune + Optuna multi-objective search, every trial and the front in
MLflow), then its published results (front, trials, report) and where to look at them.

    painvrl study                              # the shipped default study (synthetic, local Ray, sqlite MLflow)
    painvrl study --config smoke --set num_samples=4
    painvrl study --config my-study.yaml --resume
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python tune/search.py --config gpu-cluster
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from painvrl.study.shipped import DEFAULT_STUDY, shipped_names

if TYPE_CHECKING:
    from painvrl.study.driver import StudyOutcome
    from painvrl.study.spec import StudySpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_STUDY,
                        help="study YAML: a file, or the name of a shipped config "
                             f"({', '.join(shipped_names())}); default: %(default)s")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study field, e.g. num_samples=4, name=my-study, storage_dir=/tmp/runs or "
                             "base.train.epochs=3 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study stored under storage_dir/name (a killed or finished study)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show Ray Tune's trial tables and the libraries' own logs")


def run(args: argparse.Namespace) -> int:
    from painvrl.analysis.publish import publish_study
    from painvrl.study.driver import describe_study, run_study
    from painvrl.study.spec import load_study

    spec = load_study(args.config, args.overrides)
    print(describe_study(spec, resume=args.resume), flush=True)
    outcome = run_study(spec, resume=args.resume, verbose=args.verbose)
    publish_study(outcome)
    print_outcome(spec, outcome)
    return 0


def print_outcome(spec: StudySpec, outcome: StudyOutcome) -> None:
    """The front, the baselines, the hypervolume and where the results and the MLflow UI are."""
    import pandas as pd

    from painvrl.study.driver import mlflow_ui_command, mlflow_ui_url
    from painvrl.study.space import unexplored_parameters

    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.precision", 4):
        print(f"\nPareto front of study '{spec.name}' ({len(outcome.front)} of {len(outcome.trials)} trials):")
        print(outcome.front.drop(columns=["on_front", "on_optuna_front"], errors="ignore").to_string(index=False))
        if outcome.baselines is not None:
            print("\nbaselines (method/model, mean over seeds; validation objectives, test reported, never used to "
                  "choose):")
            print(outcome.baselines.to_string(index=False))
    which_baseline = ""
    if outcome.baselines is not None and spec.reference_point is None:
        from painvrl.study.baselines import best_baseline_index

        best = best_baseline_index(outcome.baselines, spec.metric_keys(), spec.directions())
        which_baseline = "" if best is None else f", the best baseline {outcome.baselines['baseline'].iloc[best]}"
    print(f"hypervolume = {outcome.hypervolume:.6g} (reference point {outcome.reference_point}{which_baseline})")
    if outcome.hypervolume == 0:
        if outcome.baselines is not None and spec.reference_point is None:
            which = "the best baseline's point"
        elif spec.erm_baseline and spec.reference_point is None:
            which = "the erm baseline's point"
        else:
            which = "it"
        print(f"  (0: no trial is better than the reference point, {which}, in every objective at once)")
    for key, value in unexplored_parameters(spec, outcome.trials):
        print(f"note: {key} took one value ({value}) in all {len(outcome.trials)} trials, so the study did not "
              f"compare its values; more trials, a larger sampler.n_startup_trials or another sampler.seed explore "
              "it")
    print(f"results: {spec.study_dir()} (front.csv, trials.csv, {'baselines.csv, ' if spec.baselines else ''}"
          "front.png, report/report.html)")
    print(f"MLflow UI: {mlflow_ui_command(outcome.tracking_uri)}")
    print(f"  then open {mlflow_ui_url(outcome.tracking_uri, outcome.parent_run_id, spec.metric_keys())}")
