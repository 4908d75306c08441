"""Data of a study report: MLflow runs (and the Optuna storage when present) loaded into DataFrames.

A study is laid out in MLflow by :mod:`painvrl.study.tracking`: one experiment, one parent run (tag
``painvrl.role=study``) and one child run per trial (tag ``painvrl.role=trial``) whose params are the sampled
hyperparameters and whose metrics are the flattened metrics.json (``@`` written ``_at_``). This module reads that
layout once (:func:`load_study_runs`) and builds the report's tables with pure functions of the loaded data.

Column convention of :attr:`StudyRuns.trials`: ``run_id``, ``trial_id``, ``run_name``, ``status``,
``start_time`` and one ``params.<key>`` / ``metrics.<key>`` column per logged param / metric (as in
``mlflow.search_runs``), plus ``on_front``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from painvrl.errors import PainvrlInputError
from painvrl.study.front import front_table, hypervolume_history
from painvrl.study.tracking import metric_name

logger = logging.getLogger(__name__)

__all__ = [
    "StudyRuns",
    "baselines_against_front",
    "env_metrics_table",
    "front_parameters_table",
    "front_test_metrics_table",
    "load_study_runs",
    "mask_density_table",
    "metric_column",
    "reference_baseline",
    "summary_table",
]

_PAGE = 1000


def metric_column(metric_key: str) -> str:
    """Trials-table column of a metrics.json path, e.g. ``val.iid.recall@20`` -> ``metrics.val.iid.recall_at_20``."""
    return "metrics." + metric_name(metric_key)


@dataclass
class StudyRuns:
    """One study as logged in MLflow."""

    name: str
    """Experiment (= study) name."""
    experiment_id: str
    tracking_uri: str
    parent_run_id: str
    parent_params: dict[str, str]
    parent_metrics: dict[str, float]
    trials: pd.DataFrame
    """One row per trial run (see the module docstring), ``on_front`` marks the Pareto front."""
    objectives: list[str]
    """Objective metric keys as in metrics.json (``val.iid.recall@20``)."""
    directions: list[str]
    hypervolume_history: np.ndarray
    """Hypervolume of the first t finished trials (the parent run's ``hypervolume_history``, else recomputed)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The study.yaml artifact of the parent run (empty when absent)."""
    metrics_json: dict[str, dict[str, Any]] = field(default_factory=dict)
    """trial_id -> metrics.json of that trial (front trials only)."""
    optuna_states: dict[str, int] | None = None
    """Trial counts per Optuna state when the study's Optuna storage is reachable, else None."""
    baselines: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per baseline (method, backbone), mean over its seeds: ``baseline`` (``method/model``),
    ``method``, ``model``, ``seeds`` and the objective columns with their test twins (empty for a study without
    ``baselines``)."""
    reference: tuple[str, list[float]] | None = None
    """(label, point) of the hypervolume reference point the front plot draws: the configured point, else the
    erm run's objectives (``erm (reference point)``); None for a study with ``baselines`` (drawn with them) or
    without either."""

    @property
    def objective_columns(self) -> list[str]:
        return [metric_column(k) for k in self.objectives]

    @property
    def param_columns(self) -> list[str]:
        return sorted(c for c in self.trials.columns if c.startswith("params."))

    @property
    def front(self) -> pd.DataFrame:
        """Front trials, best first by the first objective."""
        return self.trials[self.trials["on_front"]].reset_index(drop=True)


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=_PAGE,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _numeric(series: pd.Series) -> pd.Series:
    """Params are logged as strings: numbers become numbers, anything else stays as it is."""
    try:
        return pd.to_numeric(series)
    except (ValueError, TypeError):
        return series


def _trials_frame(runs: list[Any]) -> pd.DataFrame:
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "trial_id": run.data.tags.get("painvrl.trial_id", run.info.run_id),
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
        }
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else ["run_id", "trial_id", "run_name", "status",
                                                           "start_time"])
    for column in frame.columns:
        if column.startswith("params."):
            frame[column] = _numeric(frame[column])
    return frame.sort_values(["start_time", "trial_id"], kind="mergesort").reset_index(drop=True)


def _download_json(client: Any, run_id: str, path: str, parse: Any = json.loads) -> Any:
    """Artifact ``path`` of ``run_id`` parsed, or None when it is absent or unreadable."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            return parse(Path(local).read_text())
    except Exception as exc:  # absent artifact: the report shows what exists
        logger.info("run %s has no readable %s (%s)", run_id, path, exc)
        return None


def _objectives(params: dict[str, str], spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    specified = spec.get("objectives") or []
    if specified and all(isinstance(o, dict) and "metric" in o for o in specified):
        return [str(o["metric"]) for o in specified], [str(o.get("direction", "maximize")) for o in specified]
    keys = [k for k in params.get("objectives", "").split(",") if k]
    if not keys:
        raise PainvrlInputError("the study's parent run has no 'objectives' param and no study.yaml artifact")
    return keys, ["maximize"] * len(keys)


def _reference(spec: dict[str, Any], baseline: dict[str, float] | None, objectives: list[str],
               directions: list[str]) -> list[float] | None:
    """The hypervolume reference the driver used: configured, else the erm baseline, else the origin."""
    if isinstance(spec.get("reference_point"), list):
        return [float(v) for v in spec["reference_point"]]
    if baseline is not None:
        keys = [metric_name(k) for k in objectives]
        if all(k in baseline for k in keys):
            return [float(baseline[k]) for k in keys]
    if all(d == "maximize" for d in directions):
        return [0.0] * len(directions)
    return None


def _optuna_states(url: str | None, study_name: str) -> dict[str, int] | None:
    """Trial counts per state from the Optuna storage, only when it exists locally (never creates one)."""
    if not url:
        return None
    if url.startswith("sqlite:///"):
        if not Path(url.removeprefix("sqlite:///")).exists():
            return None
    elif "://" in url or not Path(url).exists():
        return None
    try:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage: Any = url if "://" in url else JournalStorage(JournalFileBackend(url))
        study = optuna.load_study(study_name=study_name, storage=storage)
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts
    except Exception as exc:
        logger.warning("could not read the Optuna storage %s: %s", url, exc)
        return None


def load_study_runs(tracking_uri: str, experiment: str) -> StudyRuns:
    """Load the study logged in MLflow experiment ``experiment`` (its name).

    Raises:
        PainvrlInputError: the experiment does not exist, or has no study parent run.
    """
    import yaml

    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise PainvrlInputError(f"no MLflow experiment named {experiment!r} at {tracking_uri}; "
                                f"experiments there: {names}")
    experiment_id = str(found.experiment_id)
    parents = _search_all(client, experiment_id, "tags.`painvrl.role` = 'study'")
    if not parents:
        raise PainvrlInputError(f"experiment {experiment!r} has no study parent run (tag painvrl.role=study)")
    parent = parents[0]
    parent_id = parent.info.run_id
    study_name = parent.data.tags.get("painvrl.study", experiment)
    spec = _download_json(client, parent_id, "study.yaml", yaml.safe_load) or {}
    objectives, directions = _objectives(parent.data.params, spec)

    trials = _trials_frame(_search_all(client, experiment_id,
                                       f"tags.`painvrl.role` = 'trial' and tags.`mlflow.parentRunId` = '{parent_id}'"))
    columns = [metric_column(k) for k in objectives]
    for column in columns:
        if column not in trials.columns:
            trials[column] = np.nan
    trials = front_table(trials, columns, directions).reset_index(drop=True) if len(trials) else \
        trials.assign(on_front=pd.Series(dtype=bool))

    history = np.asarray([m.value for m in sorted(client.get_metric_history(parent_id, "hypervolume_history"),
                                                  key=lambda m: m.step)], dtype=float)
    erm_runs = _search_all(client, experiment_id, "tags.`painvrl.role` = 'erm-baseline'")
    reference = _reference(spec, erm_runs[0].data.metrics if erm_runs else None, objectives, directions)
    baseline_runs = _search_all(client, experiment_id, "tags.`painvrl.role` = 'baseline'")
    drawn = None
    if reference is not None and not baseline_runs and (isinstance(spec.get("reference_point"), list) or erm_runs):
        drawn = ("reference point" if isinstance(spec.get("reference_point"), list) else "erm (reference point)",
                 reference)
    if history.size == 0 and len(trials) and len(objectives) <= 3:
        if reference is not None:
            ordered = trials.sort_values(["start_time", "trial_id"], kind="mergesort")
            finished = ordered[ordered[columns].notna().all(axis=1)]
            history = hypervolume_history(finished[columns].to_numpy(dtype=float), reference, directions)

    metrics_json = {}
    for row in trials[trials["on_front"]].itertuples():
        payload = _download_json(client, str(row.run_id), "metrics.json")
        if isinstance(payload, dict):
            metrics_json[str(row.trial_id)] = payload
    return StudyRuns(baselines=_baselines_frame(baseline_runs, objectives), reference=drawn,
                     name=study_name, experiment_id=experiment_id, tracking_uri=tracking_uri,
                     parent_run_id=parent_id, parent_params=dict(parent.data.params),
                     parent_metrics=dict(parent.data.metrics), trials=trials, objectives=objectives,
                     directions=directions, hypervolume_history=history, spec=spec, metrics_json=metrics_json,
                     optuna_states=_optuna_states(parent.data.params.get("optuna_storage"), study_name))


def _baselines_frame(runs: list[Any], objectives: list[str]) -> pd.DataFrame:
    """Mean over seeds per (method, backbone) of the baseline runs' objectives and their test twins, in
    trials-table column names (oldest runs first, so rows follow the order the study trained them in)."""
    from painvrl.study.baselines import METHOD_TAG, MODEL_TAG, SEED_TAG, Baseline, baseline_table, test_key

    ordered = sorted(runs, key=lambda run: run.info.start_time or 0)
    baselines = [Baseline(run.data.tags.get(METHOD_TAG, "erm"), run.data.tags.get(MODEL_TAG, "?"),
                          int(run.data.tags.get(SEED_TAG, 0)), dict(run.data.metrics), run.info.run_id, cached=True)
                 for run in ordered]
    table = baseline_table(baselines, objectives)
    keys = {name for key in objectives for name in (key, test_key(key))}
    return table.rename(columns={k: metric_column(k) for k in keys})


def baselines_against_front(study: StudyRuns) -> pd.DataFrame:
    """The baselines (``method/model``) with their objectives, the front trials that dominate them, those they
    dominate (validation) and the front's hypervolume over each one's point."""
    from painvrl.study.baselines import with_dominance

    if study.baselines.empty:
        return study.baselines
    table = with_dominance(study.baselines, study.front, study.objective_columns, study.directions, "trial_id")
    return table.rename(columns={c: c.removeprefix("metrics.").replace("_at_", "@") for c in table.columns})


def reference_baseline(study: StudyRuns) -> str | None:
    """The label (``method/model``) of the baseline the study took as its hypervolume reference point: the best
    baseline when the study configures no point; None otherwise."""
    from painvrl.study.baselines import best_baseline_index

    if study.baselines.empty or isinstance(study.spec.get("reference_point"), list):
        return None
    index = best_baseline_index(study.baselines, study.objective_columns, study.directions)
    return None if index is None else str(study.baselines["baseline"].iloc[index])


# ------------------------------------------------------------------------------------------ pure tables
def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


def _dataset_name(study: StudyRuns) -> str:
    base = study.spec.get("base")
    dataset = base.get("dataset") if isinstance(base, dict) else None
    return str(dataset.get("name", "?")) if isinstance(dataset, dict) else "?"


def summary_table(studies: list[StudyRuns]) -> pd.DataFrame:
    """One row per study: sampler, method, data, trial counts, hypervolume and the best value per objective."""
    rows = []
    for study in studies:
        methods = sorted({str(m.get("method")) for m in study.metrics_json.values() if m.get("method")})
        row: dict[str, Any] = {
            "study": study.name,
            "method": ", ".join(methods) or "?",
            "sampler": study.parent_params.get("sampler", "?"),
            "dataset": _dataset_name(study),
            "dataset fingerprint": study.parent_params.get("dataset_fingerprint", "?")[:12],
            "trial runs": len(study.trials),
            "finished": int((study.trials["status"] == "FINISHED").sum()) if len(study.trials) else 0,
            "front size": int(study.trials["on_front"].sum()) if len(study.trials) else 0,
            "hypervolume": study.parent_metrics.get(
                "hypervolume", float(study.hypervolume_history[-1]) if study.hypervolume_history.size else np.nan),
        }
        for key, column, direction in zip(study.objectives, study.objective_columns, study.directions,
                                          strict=True):
            values = study.trials[column].dropna() if len(study.trials) else pd.Series(dtype=float)
            best = values.max() if direction == "maximize" else values.min()
            row[f"best {key} ({'max' if direction == 'maximize' else 'min'})"] = best if len(values) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def front_parameters_table(study: StudyRuns) -> pd.DataFrame:
    """Front trials (best first by the first objective): trial id, objectives and the sampled hyperparameters."""
    front = study.front
    table = front[["trial_id", *study.objective_columns, *study.param_columns]].copy()
    names = dict(zip(study.objective_columns, study.objectives, strict=True))
    return table.rename(columns={c: names.get(c, c.split(".", 1)[1]) for c in table.columns if "." in c})


def env_metrics_table(study: StudyRuns, section: str = "val") -> pd.DataFrame:
    """Long table of per-environment metrics of the front trials: trial_id, environment, metric, value.

    Read from each front trial's metrics.json ``<section> -> envs -> {label: {metric: value}}`` (the
    environments of the IID split); a split-level ``<section> -> <split> -> envs`` block is also read, its
    environments reported as ``<split>/<label>``.
    """
    rows = []
    for trial_id in study.front["trial_id"]:
        block = study.metrics_json.get(str(trial_id), {}).get(section) or {}
        sources = [("", block.get("envs"))] + [
            (f"{split}/", sub.get("envs")) for split, sub in block.items() if isinstance(sub, dict) and split != "envs"]
        for prefix, envs in sources:
            if not isinstance(envs, dict):
                continue
            for label, values in envs.items():
                for metric, value in (values or {}).items():
                    if "@" in metric and _finite(value):
                        rows.append({"trial_id": str(trial_id), "environment": f"{prefix}{label}",
                                     "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=["trial_id", "environment", "metric", "value"])


def environment_profile_table(study: StudyRuns) -> pd.DataFrame:
    """What the front trials' learned environments are (metrics.json ``environments -> profile``): one row per
    trial and environment with the trial's number of environments and the z-score of its partition's invariance
    violation against random partitions (painvrl/invariance/diagnostics.py), then the environment's size,
    share, mean item popularity, mean time rank and per-modality shift."""
    rows = []
    for trial_id in study.front["trial_id"]:
        environments = study.metrics_json.get(str(trial_id), {}).get("environments") or {}
        profile = environments.get("profile") or []
        z = (environments.get("violation") or {}).get("z")
        for entry in profile:
            row = {"trial_id": str(trial_id), "n_envs": len(profile), "violation z": z,
                   **{k: entry.get(k) for k in ("env", "size", "share", "item_popularity", "time_rank")}}
            row.update({f"shift {name}": value for name, value in (entry.get("feature_shift") or {}).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def mask_density_table(study: StudyRuns) -> pd.DataFrame:
    """Mask density per modality of the front trials: trial_id, modality, density (fraction of open gates)."""
    rows = []
    for trial_id in study.front["trial_id"]:
        mask = study.metrics_json.get(str(trial_id), {}).get("mask") or {}
        per_modality = mask.get("per_modality") or {}
        for modality, density in per_modality.items():
            if _finite(density):
                rows.append({"trial_id": str(trial_id), "modality": str(modality), "density": float(density)})
        if _finite(mask.get("density")):
            rows.append({"trial_id": str(trial_id), "modality": "all", "density": float(mask["density"])})
    return pd.DataFrame(rows, columns=["trial_id", "modality", "density"])


def front_test_metrics_table(study: StudyRuns) -> pd.DataFrame:
    """Test metrics of the front trials (reported only: the front is chosen on validation objectives)."""
    columns = sorted(c for c in study.trials.columns if c.startswith("metrics.test."))
    table = study.front[["trial_id", *columns]].copy()
    return table.rename(columns={c: c.removeprefix("metrics.").replace("_at_", "@") for c in columns})
