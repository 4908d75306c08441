"""Tune callback mirroring trials into MLflow child runs (imports ray: load only in the study driver)."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from painvrl.study.tracking import TrialRuns, flat_params


class MlflowTrialCallback(Callback):
    """Driver-side: child run per trial (idempotent by trial id), per-evaluation metrics, final artifacts.

    A module-level class so Tune can pickle it with the experiment state for --resume.
    """

    def __init__(self, runs: TrialRuns) -> None:
        self.runs = runs

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.runs.run_id(trial.trial_id, flat_params(trial.config))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        self.runs.log_result(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.runs.finish(trial.trial_id, trial.last_result, failed=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.runs.finish(trial.trial_id, trial.last_result, failed=True)
