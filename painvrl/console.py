"""What the console shows: painvrl's own progress and summaries; third-party chatter only when asked for.

``quiet_third_party()`` raises the log level of the libraries that otherwise flood a study's console (Ray's
start-up and token notices, tensorboardX's "Summary name ... is illegal" lines, Optuna's study messages, MLflow's
database migrations and artifact download bars, matplotlib's font cache). Warnings a user can act on still come
through from painvrl itself; errors from every library still show.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

NOISY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "tensorboardX", "optuna", "mlflow", "alembic",
                 "matplotlib", "urllib3", "filelock", "git", "numexpr")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(verbose: bool = False) -> None:
    """painvrl's own messages at WARNING (INFO with ``verbose``), on stderr; third-party libraries quieted
    unless ``verbose``."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("painvrl").setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        quiet_third_party()


def quiet_third_party() -> None:
    """Third-party loggers to ERROR, their progress bars off, Ray Tune on its quiet reporter."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # mlflow resets its logger's level on import
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter at verbose=0 prints no boxes
    # The GP sampler takes a second or two per suggestion; Ray mistakes that for training in the search space.
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took",
                            category=UserWarning)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:  # optuna is only needed for studies
        pass
