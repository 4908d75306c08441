"""Builds a real study store for the report tests: MLflow sqlite + Optuna sqlite, laid out by the study code.

The experiment, parent run and trial runs are created with :mod:`painvrl.study.tracking` exactly as the Tune
driver does, the metrics.json payloads have the pipeline's layout, and :func:`painvrl.study.driver.summarise_study`
computes and logs the front (front.csv, front.png, trials.csv, hypervolume, hypervolume_history) from the Optuna
storage. Only the numbers are synthetic (deterministic per seed).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.analysis.publish import publish_study
from painvrl.study import tracking
from painvrl.study.baselines import (
    BASELINE_ROLE,
    CONFIG_HASH_TAG,
    FINGERPRINT_TAG,
    METHOD_TAG,
    Baseline,
    baseline_table,
    best_baseline_point,
    log_baseline,
)
from painvrl.study.driver import StudyOutcome, summarise_study
from painvrl.study.spec import BaselineSpec, Objective, SamplerSpec, StudySpec, dump_study
from painvrl.training.results import final_report

MODALITIES = ("visual", "textual")

_EMPTY_STORE: list[Path] = []


def fresh_tracking_uri(folder: Path) -> str:
    """A new, empty MLflow sqlite store in ``folder``: a copy of one migrated per process (migrations take ~7 s)."""
    if not _EMPTY_STORE:
        from mlflow.tracking import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="painvrl-mlflow-template-")) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _EMPTY_STORE.append(template)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_EMPTY_STORE[0], folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def _split(rng: np.random.Generator, base: float, n_envs: int) -> dict[str, Any]:
    envs = {str(e): {"recall@20": base * (1.0 - 0.15 * e) + rng.normal(0, 0.004),
                     "ndcg@20": 0.6 * base * (1.0 - 0.15 * e), "n_users": 50} for e in range(n_envs)}
    worst = {k: min(v[k] for v in envs.values()) for k in ("recall@20", "ndcg@20")}
    spread = {k: max(v[k] for v in envs.values()) - worst[k] for k in ("recall@20", "ndcg@20")}
    return {"envs": envs, "worst_env": worst, "spread": spread}


def synthetic_metrics(rng: np.random.Generator, method: str, pref_ood: float, n_envs: int) -> dict[str, Any]:
    """A metrics.json with the pipeline's layout; IID and OOD recall trade off through ``pref_ood``."""
    iid = 0.30 - 0.12 * pref_ood + rng.normal(0, 0.01)
    ood = 0.10 + 0.10 * pref_ood + rng.normal(0, 0.01)
    sections = {}
    for section, scale in (("val", 1.0), ("test", 0.95)):
        block = {"iid": {"recall@20": scale * iid, "ndcg@20": 0.6 * scale * iid, "n_users": 100},
                 "ood": {"recall@20": scale * ood, "ndcg@20": 0.6 * scale * ood, "n_users": 80}}
        block.update(_split(rng, scale * iid, n_envs))
        sections[section] = block
    per_modality = {m: float(np.clip(0.8 - 0.5 * pref_ood + 0.2 * i + rng.normal(0, 0.02), 0, 1))
                    for i, m in enumerate(MODALITIES)}
    return {"method": method, "selection": {"source": "val", "metric": "recall@20", "key": "iid.recall@20"},
            **sections,
            "mask": {"density": float(np.mean(list(per_modality.values()))), "per_modality": per_modality,
                     "fraction_open": 0.7, "auc": None},
            "environments": {"source": "learned", "sizes": [100] * n_envs, "ari": 0.5,
                             "violation": {"violation": 0.02, "random_mean": 0.001, "random_std": 0.0005,
                                           "z": 38.0, "ratio": 20.0},
                             "profile": [{"env": e, "size": 100, "share": 1 / n_envs, "item_popularity": 5.0 + e,
                                          "feature_shift": {m: 0.1 * e for m in MODALITIES}}
                                         for e in range(n_envs)]}}


def make_study(root: Path, tracking_uri: str, name: str, sampler: str = "tpe", method: str = "painvrl",
               seed: int = 0, n_trials: int = 8, failed_trials: int = 1, dataset: str = "synthetic",
               baselines: Sequence[tuple[str, str, float, float]] = ()) -> StudyOutcome:
    """Log one synthetic study of ``n_trials`` finished (+ ``failed_trials`` failed) trials; return its outcome.

    ``baselines``: (method, model, val IID recall, val OOD recall) of baseline runs logged as
    :func:`painvrl.study.baselines.run_baselines` logs them; the best one is then the reference point."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = StudySpec(name=name, storage_dir=str(root), tracking_uri=tracking_uri, num_samples=n_trials,
                     base={"dataset": {"name": dataset}},
                     objectives=[Objective("val.iid.recall@20"), Objective("val.ood.recall@20")],
                     sampler=SamplerSpec(name=sampler, seed=seed),  # type: ignore[arg-type]
                     reference_point=None if baselines else [0.0, 0.0],
                     baselines=[BaselineSpec(model, method) for method, model, _, _ in baselines])
    study_dir = spec.study_dir()
    study_dir.mkdir(parents=True, exist_ok=True)
    dump_study(spec, study_dir / "study.yaml")
    experiment_id = tracking.ensure_experiment(tracking_uri, name, study_dir / "mlflow-artifacts")
    parent = tracking.start_parent_run(tracking_uri, experiment_id, name, {
        "sampler": sampler, "num_samples": n_trials, "objectives": ",".join(spec.metric_keys()),
        "optuna_storage": spec.optuna_url(), "dataset_fingerprint": f"fp{seed:04d}" * 4}, {})
    tracking._client(tracking_uri).log_artifact(parent, str(study_dir / "study.yaml"))

    study = optuna.create_study(study_name=name, storage=spec.optuna_url(), directions=spec.directions())  # type: ignore[arg-type]
    distributions = {"mask.pref_ood": optuna.distributions.FloatDistribution(0.0, 1.0),
                     "environments.n_envs": optuna.distributions.IntDistribution(2, 4),
                     "mask.sparsity_weight": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    runs = tracking.TrialRuns(tracking_uri, experiment_id, parent, name)
    rng = np.random.default_rng(seed)
    for number in range(n_trials + failed_trials):
        params: dict[str, Any] = {"mask.pref_ood": float(rng.uniform()), "environments.n_envs": int(rng.integers(2, 5)),
                  "mask.sparsity_weight": float(10 ** rng.uniform(-4, -1))}
        trial_id = f"{name}_{number:05d}"
        runs.run_id(trial_id, params)
        if number >= n_trials:
            runs.finish(trial_id, None, failed=True)
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                      state=optuna.trial.TrialState.FAIL))
            continue
        for epoch in range(2):
            runs.log_result(trial_id, {"live.val.iid.recall@20": 0.1 * (epoch + 1)})
        metrics = synthetic_metrics(rng, method, params["mask.pref_ood"], int(params["environments.n_envs"]))
        report = final_report(metrics, np.linspace(0, 1, 8))
        runs.log_result(trial_id, report)
        runs.finish(trial_id, report, failed=False)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  values=[report[k] for k in spec.metric_keys()]))
    logged = _log_baselines(spec, tracking_uri, experiment_id, parent, baselines)
    reference = best_baseline_point(baseline_table(logged, spec.metric_keys()), spec.metric_keys(),
                                    spec.directions()) if logged else [0.0, 0.0]
    assert reference is not None
    outcome = summarise_study(spec, reference, tracking_uri, parent, logged)
    publish_study(outcome)
    return outcome


def _log_baselines(spec: StudySpec, tracking_uri: str, experiment_id: str, parent: str,
                   baselines: Sequence[tuple[str, str, float, float]]) -> list[Baseline]:
    out = []
    for method, model, iid, ood in baselines:
        baseline = BaselineSpec(model, method)
        metrics = {"method": method, "val": {"iid": {"recall@20": iid}, "ood": {"recall@20": ood}},
                   "test": {"iid": {"recall@20": 0.95 * iid}, "ood": {"recall@20": 0.95 * ood}}}
        flat = {"val.iid.recall_at_20": iid, "val.ood.recall_at_20": ood,
                "test.iid.recall_at_20": 0.95 * iid, "test.ood.recall_at_20": 0.95 * ood}
        tags = {tracking.ROLE_TAG: BASELINE_ROLE, METHOD_TAG: method, CONFIG_HASH_TAG: f"{method}-{model}",
                FINGERPRINT_TAG: "synthetic"}
        run_id = log_baseline(tracking_uri, experiment_id, parent, spec.name, baseline, 0, tags, flat, metrics)
        out.append(Baseline(method, model, 0, flat, run_id, cached=False))
    return out
