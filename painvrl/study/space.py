"""Search space: the study's ranges as an Optuna define-by-run function, and trial params -> run config."""

from __future__ import annotations

import json
import math
from typing import Any

from painvrl.config import Config, config_from_dict, set_dotted
from painvrl.study.spec import StudySpec

PREF_OOD_BOUNDS = (0.05, 0.95)


def simplex_from_uniforms(uniforms: list[float]) -> list[float]:
    """Map k values in (0, 1) to a point uniformly distributed on the simplex (normalised exponentials)."""
    weights = [-math.log(max(1e-12, 1.0 - u)) for u in uniforms]
    total = sum(weights)
    return [w / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)


class DefineByRunSpace:
    """The callable OptunaSearch invokes per trial; returns constants merged into the trial's params.

    A module-level class rather than a closure: Tune pickles the searcher (with plain pickle) for --resume.
    """

    def __init__(self, spec: StudySpec, n_mask_objectives: int) -> None:
        self.ranges = dict(spec.search)
        self.n_mask_objectives = n_mask_objectives

    def __call__(self, trial: Any) -> dict[str, Any]:
        constants: dict[str, Any] = {}
        for key, rng in self.ranges.items():
            if key == "preference":
                if self.n_mask_objectives == 2:
                    low, high = (rng.low, rng.high) if rng.low is not None and rng.high is not None \
                        else PREF_OOD_BOUNDS
                    trial.suggest_float("mask.pref_ood", low, high)
                else:
                    uniforms = [trial.suggest_float(f"preference_u{j}", 0.0, 1.0)
                                for j in range(self.n_mask_objectives)]
                    constants["mask.preference"] = simplex_from_uniforms(uniforms)
            elif rng.kind == "int":
                assert rng.low is not None and rng.high is not None
                trial.suggest_int(key, int(rng.low), int(rng.high))
            elif rng.kind == "float":
                trial.suggest_float(key, rng.low, rng.high)
            elif rng.kind == "log":
                trial.suggest_float(key, rng.low, rng.high, log=True)
            elif rng.kind == "categorical":
                trial.suggest_categorical(key, rng.choices)
        return constants


def trial_config(spec: StudySpec, params: dict[str, Any]) -> Config:
    """The run config of one trial: base + sampled params (dotted keys) + per-trial scaling."""
    values = json.loads(json.dumps(spec.base))
    settings = {key: value for key, value in params.items() if key != "spec" and not key.startswith("preference_u")}
    settings.update({"scaling.num_workers": spec.trial_num_workers, "scaling.use_gpu": spec.trial_use_gpu,
                     "scaling.cpus_per_worker": spec.trial_cpus, "train.progress": False})
    for key, value in settings.items():
        set_dotted(values, key.split("."), value)
    return config_from_dict(values)


def unexplored_parameters(spec: StudySpec, trials: Any) -> list[tuple[str, Any]]:
    """The searched int and categorical parameters that took one value in every completed trial (a study of at
    least 3 trials), with that value: the search compared nothing along them."""
    if len(trials) < 3:
        return []
    found = []
    for key, rng in spec.search.items():
        if rng.kind in ("int", "categorical") and key in trials.columns:
            values = trials[key].dropna().unique()
            if len(values) == 1:
                found.append((key, values[0].item() if hasattr(values[0], "item") else values[0]))
    return found
