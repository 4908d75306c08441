"""Run a PaInvRL study: Ray Tune + Optuna multi-objective search, every trial and the front in MLflow.

    python tune/search.py                                  # default study (synthetic, local Ray, sqlite MLflow)
    python tune/search.py --config tune/configs/smoke.yaml --set num_samples=4
    python tune/search.py --config ... --resume            # continue a killed study
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python tune/search.py --config ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="study YAML (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study field, e.g. num_samples=4 or base.train.epochs=3")
    parser.add_argument("--resume", action="store_true", help="continue the study stored under storage_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from painvrl.errors import PainvrlInputError
    from painvrl.study.spec import load_study

    try:
        spec = load_study(args.config, args.overrides)
        from painvrl.study.driver import mlflow_ui_command, run_study

        outcome = run_study(spec, resume=args.resume)
    except PainvrlInputError as exc:
        print(f"search.py: error: {exc}", file=sys.stderr)
        return 2
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 30):
        print(f"\nPareto front of study '{spec.name}' ({len(outcome.front)} of {len(outcome.trials)} trials):")
        print(outcome.front.to_string(index=False))
    print(f"hypervolume = {outcome.hypervolume:.6g} (reference point {outcome.reference_point})")
    if outcome.hypervolume == 0:
        which = "the erm baseline's point" if spec.erm_baseline and spec.reference_point is None else "it"
        print(f"  (0: no trial is better than the reference point, {which}, in every objective at once)")
    print(f"study folder: {spec.study_dir()}")
    print(f"MLflow parent run: {outcome.parent_run_id}")
    print(f"open the MLflow UI:  {mlflow_ui_command(outcome.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
