"""OptunaSearch with the Optuna storage as the source of truth for the trial budget (imports ray).

Why: Tune checkpoints its experiment state periodically, so a driver killed between Optuna's ``ask`` and Tune's
next checkpoint leaves trials that Optuna knows and Tune does not. On ``--resume`` such trials are settled
(``settle_unknown_trials``) and the budget counts what the storage holds, so no trial is lost or run twice.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, cast

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

TUNE_TRIAL_ATTR = "tune_trial_id"
STALE_ATTR = "painvrl_stale_after_driver_kill"


class BudgetedOptunaSearch(OptunaSearch):
    """Suggests only while COMPLETE + RUNNING trials in the Optuna storage stay below ``budget``."""

    def __init__(self, *args: Any, budget: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget

    def suggest(self, trial_id: str) -> dict[Any, Any] | None:
        import optuna

        if trial_id not in self._ot_trials:
            states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
            study = cast(optuna.Study, self._ot_study)
            used = len(study.get_trials(deepcopy=False, states=states))
            if used >= self.budget:
                # Tune's documented "no more trials" sentinel (a str, despite the base class's annotation)
                return cast(dict[Any, Any], Searcher.FINISHED)
        suggestion = super().suggest(trial_id)
        if isinstance(suggestion, dict):
            self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return suggestion


    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # The checkpointed sampler RNG predates the last suggestions made before the kill: replaying it would
        # re-suggest configurations already tried. A resumed study therefore draws fresh randomness.
        cast(Any, self._ot_study).sampler.reseed_rng()


def tune_known_trial_ids(experiment_dir: Path) -> set[str]:
    """Trial ids recorded in Tune's newest experiment checkpoint."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return set()
    return set(re.findall(r'\\?"trial_id\\?":\s*\\?"(\w+)\\?"', states[-1].read_text()))


def settle_unknown_trials(study: Any, known_trial_ids: set[str]) -> list[int]:
    """Mark RUNNING Optuna trials that Tune never checkpointed as FAIL (tagged stale); Tune will not re-run
    them, so their budget slot is freed for a fresh trial. Returns their numbers."""
    import optuna

    stale = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get(TUNE_TRIAL_ATTR) in known_trial_ids:
            continue  # Tune restores and re-runs it, completing this same Optuna trial
        study._storage.set_trial_user_attr(trial._trial_id, STALE_ATTR, True)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        stale.append(trial.number)
    if stale:
        logger.warning("resume: Optuna trials %s were asked but never checkpointed by Tune; marked FAIL (stale)",
                       stale)
    return stale


def stale_tune_trial_ids(study: Any) -> set[str]:
    return {str(t.user_attrs[TUNE_TRIAL_ATTR]) for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(STALE_ATTR) and TUNE_TRIAL_ATTR in t.user_attrs}


def settled_tune_trials(study: Any) -> dict[str, bool]:
    """{Tune trial id: failed} of the Optuna trials that ended (COMPLETE or FAIL, stale ones excluded). Optuna is
    told before Tune checkpoints and before the MLflow callback runs, so after a driver kill it is the one
    record of a trial that finished in that window."""
    import optuna

    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return {str(t.user_attrs[TUNE_TRIAL_ATTR]): t.state == optuna.trial.TrialState.FAIL
            for t in study.get_trials(deepcopy=False, states=ended)
            if TUNE_TRIAL_ATTR in t.user_attrs and not t.user_attrs.get(STALE_ATTR)}
