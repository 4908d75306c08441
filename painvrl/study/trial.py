"""One study trial: a Tune function trainable that trains in-process or launches a Ray Train run.

The last report of every trial carries the selected epoch's metrics (OptunaSearch tells Optuna only the final
values), plus metrics.json and the mask as JSON strings for the driver-side MLflow callback.
"""

from __future__ import annotations

from typing import Any

from painvrl.study.space import trial_config
from painvrl.study.spec import StudySpec, _build_spec
from painvrl.training.results import final_report


def run_trial(tune_config: dict[str, Any]) -> None:
    """Tune function trainable. tune_config = {"params": sampled params, "spec": study spec as a dict}."""
    import ray.tune

    spec: StudySpec = _build_spec(dict(tune_config["spec"]))
    params = {k: v for k, v in tune_config.items() if k != "spec"}
    config = trial_config(spec, params)
    objective_keys = spec.metric_keys()

    if config.scaling.num_workers == 0:
        from painvrl.data.registry import load_dataset
        from painvrl.distributed.collective import LocalCollective
        from painvrl.training.pipeline import run_pipeline

        def reporter(update: dict[str, Any], state: dict[str, Any] | None = None) -> None:
            live = {f"live.{k}": float(v) for k, v in update.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}
            ray.tune.report(live)

        data = load_dataset(config.dataset)
        result = run_pipeline(config, data, LocalCollective(), reporter)
        report = final_report(result.metrics, result.mask)
    else:
        from painvrl.training.ray_train import fit_with_ray_train

        # Train V2 pattern: the TorchTrainer's reports (per evaluation, then the final one built by rank 0 with
        # final_report) reach Tune through TuneReportCallback; nothing is reported twice.
        outcome = fit_with_ray_train(config, run_name=f"trial-{ray.tune.get_context().get_trial_id()}",
                                     storage_path=str(spec.study_dir() / "train"), forward_to_tune=True)
        report = final_report(outcome.metrics, outcome.mask)
        _check_objectives(report, objective_keys)
        return
    _check_objectives(report, objective_keys)
    ray.tune.report(report)


def _check_objectives(report: dict[str, Any], objective_keys: list[str]) -> None:
    missing = [k for k in objective_keys if k not in report]
    if missing:
        raise KeyError(f"trial metrics lack objective(s) {missing}; available: {sorted(report)[:20]}")
