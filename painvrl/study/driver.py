"""The study driver: Ray Tune + OptunaSearch (multi-objective) over PaInvRL trials, tracked in MLflow."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from painvrl.errors import PainvrlInputError
from painvrl.study.baselines import (
    Baseline,
    baseline_table,
    best_baseline_point,
    check_baselines,
    run_baselines,
    test_key,
    with_dominance,
)
from painvrl.study.spec import StudySpec, dump_study, validate_study
from painvrl.study.storage import TrialNumbers
from painvrl.study.storage import optuna_storage as _optuna_storage

logger = logging.getLogger(__name__)

@dataclass
class StudyOutcome:
    spec: StudySpec
    trials: pd.DataFrame
    """One row per completed trial: trial_id, sampled params, objectives, test metrics, on_front."""
    front: pd.DataFrame
    hypervolume: float
    reference_point: list[float]
    parent_run_id: str
    tracking_uri: str
    baselines: pd.DataFrame | None = None
    """One row per baseline (method, backbone), labelled ``method/model`` (mean over seeds): validation
    objectives, their test twins, which front trials dominate it / it dominates, and the front's hypervolume
    over its point (None without ``baselines``)."""
    reference_label: str | None = None
    """What the reference point is, as its front plot labels it (``erm (reference point)``); None when it is
    one of the ``baselines`` rows (drawn with them) or only the origin."""


def reference_label(spec: StudySpec, baselines: list[Baseline]) -> str | None:
    """The label of the study's reference point on its front plot (see :attr:`StudyOutcome.reference_label`)."""
    if spec.reference_point is not None:
        return "reference point"
    if baselines:
        return None
    return "erm (reference point)" if spec.erm_baseline else None


def build_sampler(spec: StudySpec) -> Any:
    import optuna

    s = spec.sampler
    startup = s.n_startup_trials if s.n_startup_trials is not None else max(3, spec.num_samples // 3)
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup, multivariate=True)
    if s.name == "nsga2":
        population = s.population_size or max(4, spec.num_samples // 3)
        return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=population)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=s.seed)


def _init_ray(spec: StudySpec, verbose: bool = False) -> None:
    from painvrl.training.ray_runtime import start_ray

    # Per-evaluation reports stream live.* metrics; only the final report carries the objectives.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    per_trial = spec.trial_cpus * (1 + spec.trial_num_workers)
    start_ray(spec.ray_num_cpus or int(per_trial * spec.max_concurrent_trials + 0.999), spec.ray_address,
              verbose)


def _versions() -> dict[str, str]:
    from painvrl.training.results import package_versions

    return package_versions()


def _git_commit() -> str:
    from painvrl.training.results import git_commit

    return git_commit()


def check_objectives_have_data(spec: StudySpec, data: Any) -> None:
    """Objectives on OOD validation need an OOD validation split (OOD test rows alone do not give one)."""
    for index, key in enumerate(spec.metric_keys()):
        if key.startswith("val.ood.") and not data.has_ood_validation():
            raise PainvrlInputError(f"study field 'objectives[{index}]': {key!r} needs OOD validation, but "
                                    f"dataset {data.name!r} has none (set base.dataset.ood_val_fraction for "
                                    "a set with OOD test rows only)")


def run_study(spec: StudySpec, resume: bool = False, verbose: bool = False) -> StudyOutcome:
    """Run (or resume) the study; returns the trials table and the front. Logs everything to MLflow.

    The console shows one progress bar over the trials; ``verbose`` restores Ray Tune's own trial tables.
    """
    import ray
    from ray import tune

    from painvrl.data.registry import load_dataset
    from painvrl.study import tracking
    from painvrl.study.callbacks import MlflowTrialCallback
    from painvrl.study.identity import pin_study_identity, study_identity
    from painvrl.study.progress import StudyProgress
    from painvrl.study.searcher import (
        BudgetedOptunaSearch,
        settle_unknown_trials,
        settled_tune_trials,
        stale_tune_trial_ids,
        tune_known_trial_ids,
    )
    from painvrl.study.space import DefineByRunSpace
    from painvrl.study.trial import run_trial

    study_dir = spec.study_dir()
    study_dir.mkdir(parents=True, exist_ok=True)
    base = spec.base_config()
    from painvrl.training.checks import resolve_run

    resolve_run(base)  # names and backbone settings, before data, Ray or MLflow
    check_baselines(spec)  # the same for every baseline's run config
    # Bad data fails here, before any trial starts; the fingerprint identifies the data in MLflow.
    data = load_dataset(base.dataset)
    check_objectives_have_data(spec, data)
    fingerprint = data.fingerprint()
    identity = study_identity(base.config_hash(), fingerprint, spec.to_dict().get("search", {}),
                              spec.metric_keys(), spec.directions())
    # One storage object for the identity check, the searcher and a resume (each RDBStorage opens an engine).
    storage = _optuna_storage(spec.optuna_url())
    pin_study_identity(storage, spec.name, spec.directions(), identity, str(study_dir))

    _init_ray(spec, verbose)
    validate_study(spec, cluster_cpus=float(ray.cluster_resources().get("CPU", 0)))
    dump_study(spec, study_dir / "study.yaml")

    tracking_uri = spec.mlflow_uri()
    experiment_id = tracking.ensure_experiment(tracking_uri, spec.name, study_dir / "mlflow-artifacts")
    parent_params = {"spec_hash": spec.spec_hash(), "num_samples": spec.num_samples,
                     "sampler": spec.sampler.name, "sampler_seed": spec.sampler.seed,
                     "objectives": ",".join(spec.metric_keys()), "optuna_storage": spec.optuna_url(),
                     "dataset_fingerprint": fingerprint, "base_config_hash": base.config_hash(),
                     **{f"search.{k}": f"{v.kind}:{v.low}:{v.high}" for k, v in spec.search.items()}}
    parent_tags = {"painvrl.git_commit": _git_commit(),
                   **{f"painvrl.version.{k}": v for k, v in _versions().items()}}
    parent_run_id = tracking.start_parent_run(tracking_uri, experiment_id, spec.name, parent_params, parent_tags)
    _client = tracking._client(tracking_uri)
    _client.log_artifact(parent_run_id, str(study_dir / "study.yaml"))

    baselines = run_baselines(spec, data, fingerprint, tracking_uri, experiment_id, parent_run_id) \
        if spec.baselines else []
    reference = _reference_point(spec, data, tracking_uri, experiment_id, parent_run_id, baselines)

    runs = tracking.TrialRuns(tracking_uri, experiment_id, parent_run_id, spec.name,
                              TrialNumbers(spec.optuna_url(), spec.name))
    n_mask_objectives = 2 + (base.mask.extra_objective != "none")
    searcher = BudgetedOptunaSearch(space=DefineByRunSpace(spec, n_mask_objectives), metric=spec.metric_keys(),
                                    mode=["max" if d == "maximize" else "min" for d in spec.directions()],
                                    sampler=build_sampler(spec), study_name=spec.name,
                                    storage=storage, budget=spec.num_samples)
    import optuna

    completed = len(optuna.load_study(study_name=spec.name, storage=storage).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)))
    progress = StudyProgress(spec.num_samples, spec.metric_keys(), spec.directions(), reference, done=completed)
    callbacks = [MlflowTrialCallback(runs), progress]
    trainable = tune.with_resources(run_trial, {"cpu": spec.trial_cpus if spec.trial_num_workers == 0 else 1})
    param_space = {"spec": spec.to_dict()}
    tune_path = study_dir / "tune"
    if resume and tune.Tuner.can_restore(str(tune_path / spec.name)):
        logger.info("resuming study from %s", tune_path / spec.name)
        study = optuna.load_study(study_name=spec.name, storage=storage)
        settle_unknown_trials(study, tune_known_trial_ids(tune_path / spec.name))
        runs.mark_killed(stale_tune_trial_ids(study))
        tuner = tune.Tuner.restore(str(tune_path / spec.name), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, param_space=param_space)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=spec.num_samples,
                                        max_concurrent_trials=spec.max_concurrent_trials,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=spec.name, storage_path=str(tune_path),
                                      callbacks=callbacks, verbose=1 if verbose else 0),
        )
    grid = tuner.fit()
    # Close child runs a killed driver left open: from Tune's final result where it has one, else from the
    # Optuna state (a trial that ended after Tune's last checkpoint has no Tune result).
    outcomes: dict[str, tuple[dict[str, Any] | None, bool]] = {
        trial_id: (None, failed)
        for trial_id, failed in settled_tune_trials(optuna.load_study(study_name=spec.name, storage=storage)).items()}
    for r in (grid[i] for i in range(len(grid))):  # ResultGrid has no __iter__ in its type stubs
        if r.metrics and "trial_id" in r.metrics:
            outcomes[str(r.metrics["trial_id"])] = (r.metrics, r.error is not None)
    runs.finish_left_running(outcomes)
    return summarise_study(spec, reference, tracking_uri, parent_run_id, baselines,
                           reference_label(spec, baselines))


def _reference_point(spec: StudySpec, data: Any, tracking_uri: str, experiment_id: str,
                     parent_run_id: str, baselines: list[Baseline]) -> list[float]:
    """Configured point, else the best of the ``baselines``, else the erm baseline's objectives (run once,
    cached on the parent run), else 0."""
    if spec.reference_point is not None:
        return list(spec.reference_point)
    best = best_baseline_point(baseline_table(baselines, spec.metric_keys()), spec.metric_keys(),
                               spec.directions()) if baselines else None
    if best is not None:
        return best
    if not spec.erm_baseline:
        return [0.0 if d == "maximize" else float("inf") for d in spec.directions()]
    from painvrl.distributed.collective import LocalCollective
    from painvrl.study import tracking
    from painvrl.study.space import trial_config
    from painvrl.training.pipeline import run_pipeline
    from painvrl.training.results import flatten_metrics

    client = tracking._client(tracking_uri)
    existing = tracking.find_run(tracking_uri, experiment_id, {tracking.STUDY_TAG: spec.name,
                                                               tracking.ROLE_TAG: "erm-baseline"})
    if existing is not None:
        logged = client.get_run(existing).data.metrics
        keys = [tracking.metric_name(k) for k in spec.metric_keys()]
        if all(k in logged for k in keys):
            return [float(logged[k]) for k in keys]
    config = trial_config(spec, {"method": "erm"})
    config.scaling.num_workers = 0
    flat = flatten_metrics(run_pipeline(config, data, LocalCollective(), None).metrics)
    run = client.create_run(experiment_id, run_name="erm-baseline", tags={
        tracking.PARENT_TAG: parent_run_id, tracking.STUDY_TAG: spec.name, tracking.ROLE_TAG: "erm-baseline"})
    for key, value in flat.items():
        client.log_metric(run.info.run_id, tracking.metric_name(key), value)
    client.set_terminated(run.info.run_id)
    return [flat[k] for k in spec.metric_keys()]


def trials_table(spec: StudySpec) -> pd.DataFrame:
    """Completed trials from the Optuna storage (the source of truth for the front)."""
    import optuna

    from painvrl.study.searcher import TUNE_TRIAL_ATTR

    study = optuna.load_study(study_name=spec.name, storage=_optuna_storage(spec.optuna_url()))
    rows = []
    best = {t.number for t in study.best_trials}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        row: dict[str, Any] = {"number": trial.number, "on_optuna_front": trial.number in best,
                               "trial_id": trial.user_attrs.get(TUNE_TRIAL_ATTR)}
        row.update({k: v for k, v in trial.params.items() if not k.startswith("preference_u")})
        row.update(dict(zip(spec.metric_keys(), trial.values, strict=True)))
        rows.append(row)
    return pd.DataFrame(rows)


def _with_test_metrics(table: pd.DataFrame, spec: StudySpec, tracking_uri: str, parent_run_id: str) -> pd.DataFrame:
    """The trials table with the test twin of every objective (read from the trials' MLflow runs): reported
    next to the validation objectives, never used to choose."""
    from painvrl.study import tracking

    client = tracking._client(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`{tracking.STUDY_TAG}` = '{spec.name}' and tags.`{tracking.ROLE_TAG}` = 'trial'"
    by_trial = {run.data.tags.get(tracking.TRIAL_TAG): run.data.metrics
                for run in client.search_runs([experiment_id], filter_string=query, max_results=50_000)}
    out = table.copy()
    for key in spec.metric_keys():
        name = test_key(key)
        if name != key:
            out[name] = [by_trial.get(t, {}).get(tracking.metric_name(name), float("nan")) for t in out["trial_id"]]
    return out


def summarise_study(spec: StudySpec, reference: list[float], tracking_uri: str, parent_run_id: str,
                    baselines: list[Baseline] | None = None, reference_label: str | None = None) -> StudyOutcome:
    """Front, hypervolume and tables of the finished trials, logged to the parent run; every trial run is
    tagged ``pareto_front`` true or false."""
    from painvrl.study import tracking
    from painvrl.study.front import front_table, hypervolume, hypervolume_history

    study_dir = spec.study_dir()
    table = trials_table(spec)
    keys, directions = spec.metric_keys(), spec.directions()
    if table.empty:
        raise RuntimeError(f"study {spec.name}: no completed trials (see the Tune logs in {study_dir / 'tune'})")
    table = front_table(_with_test_metrics(table, spec, tracking_uri, parent_run_id), keys, directions)
    front = table[table["on_front"]].reset_index(drop=True)
    experiment_id = tracking._client(tracking_uri).get_run(parent_run_id).info.experiment_id
    tracking.TrialRuns(tracking_uri, experiment_id, parent_run_id, spec.name).mark_front(
        {str(t): int(n) for t, n in zip(table["trial_id"], table["number"], strict=True) if isinstance(t, str)},
        {str(t): bool(f) for t, f in zip(table["trial_id"], table["on_front"], strict=True) if isinstance(t, str)})
    points = table[keys].to_numpy(dtype=float)
    hv = float(hypervolume(points, reference, directions)) if len(keys) in (2, 3) else float("nan")
    history: Any = hypervolume_history(table.sort_values("number")[keys].to_numpy(dtype=float), reference,
                                  directions) if len(keys) in (2, 3) else []
    csv_path = study_dir / "front.csv"
    front.to_csv(csv_path, index=False)
    table.to_csv(study_dir / "trials.csv", index=False)
    metrics = {"hypervolume": hv, "n_trials": float(len(table)), "front_size": float(len(front))}
    for t, value in enumerate(history):
        tracking._client(tracking_uri).log_metric(parent_run_id, "hypervolume_history", float(value), step=t)
    extra = [study_dir / "trials.csv"]
    compared = None
    if baselines:
        compared = with_dominance(baseline_table(baselines, keys), front, keys, directions)
        compared.to_csv(study_dir / "baselines.csv", index=False)
        extra.append(study_dir / "baselines.csv")
        metrics["baselines_dominated"] = float((compared["dominated by"] != "none").sum())
    tracking.log_front(tracking_uri, parent_run_id, csv_path, None, metrics, extra_files=extra)
    return StudyOutcome(spec, table, front, hv, reference, parent_run_id, tracking_uri, compared, reference_label)


UI_HOST, UI_PORT = "127.0.0.1", 5000


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that serves a local store's MLflow UI on loopback (a remote server is opened directly)."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --host {UI_HOST} --port {UI_PORT} --workers 1"


def mlflow_ui_url(tracking_uri: str, parent_run_id: str, metric_keys: list[str]) -> str:
    """URL of the study's runs (parent and trials) with its objective columns, in the UI served by
    :func:`mlflow_ui_command` (or on the tracking server itself when the store is http://). Stores the view it
    opens on the study's experiment (:func:`tracking.save_study_view`)."""
    from painvrl.study import tracking

    client = tracking._client(tracking_uri)
    run = client.get_run(parent_run_id)
    experiment_id = run.info.experiment_id
    study = run.data.tags.get(tracking.STUDY_TAG, "")
    key = tracking.save_study_view(tracking_uri, experiment_id, study, metric_keys)
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else f"http://{UI_HOST}:{UI_PORT}"
    return tracking.study_runs_url(base, experiment_id, key)


def describe_study(spec: StudySpec, resume: bool = False) -> str:
    """The study's start line: what runs, on which data, how many trials, where results go."""
    base = spec.base_config()
    data = base.dataset.name + (f" ({base.dataset.path})" if getattr(base.dataset, "path", None) else "")
    where = "in-process" if spec.trial_num_workers == 0 else f"{spec.trial_num_workers} Ray Train workers each"
    verb = "resuming" if resume else "study"
    return (f"{verb} '{spec.name}': {base.method} on {data}, {spec.num_samples} trials "
            f"({spec.max_concurrent_trials} at a time, {where}); results in {spec.study_dir()}, "
            f"MLflow {spec.mlflow_uri()}")
