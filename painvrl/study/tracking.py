"""MLflow layout of a study: one experiment per study, a parent run per study, one child run per trial.

All MLflow calls happen in the Tune driver process (the head node on a cluster): trials report to the driver
through Ray, so worker nodes never need to reach the tracking server. Child runs are keyed by the Tune trial id
(tag ``painvrl.trial_id``), so a retried or resumed trial reuses its run instead of creating a second one.

As a person reads the runs table: a trial's run is named by its Optuna trial number (``trial 7``), its
description (the ``mlflow.note.content`` tag) lists the values the search chose, and once the study is
summarised every trial run carries ``pareto_front`` = ``true`` or ``false``, so the table filters to the front
with ``tags.pareto_front = 'true'``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "painvrl.trial_id"
STUDY_TAG = "painvrl.study"
ROLE_TAG = "painvrl.role"
NUMBER_TAG = "painvrl.trial_number"
FRONT_TAG = "pareto_front"
"""``true`` on the runs of the trials on the study's Pareto front, ``false`` on the other trials' runs."""
NOTE_TAG = "mlflow.note.content"
"""The run's description in the MLflow UI (markdown)."""
RUN_NAME_TAG = "mlflow.runName"


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
"""Makes the MLflow UI open the experiment on its runs table, not on the GenAI overview."""
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
STUDY_VIEW_KEY = "painvrl-study"


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> str:
    """Experiment id for the study, created with an explicit artifact location (never ./mlruns of the CWD) and
    tagged as model training."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if artifact_root is not None and tracking_uri.startswith("sqlite:"):
            artifact_root.mkdir(parents=True, exist_ok=True)
            location = artifact_root.resolve().as_uri()
        experiment_id = str(client.create_experiment(name, artifact_location=location))
    else:
        experiment_id = str(experiment.experiment_id)
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return experiment_id


def metric_name(key: str) -> str:
    """The MLflow name of a metrics.json path: ``val.iid.recall@20`` -> ``val.iid.recall_at_20``."""
    return key.replace("@", "_at_")


def save_study_view(tracking_uri: str, experiment_id: str, study: str, metric_keys: list[str]) -> str:
    """Store a shared view of the runs table (the study's runs, its objective columns, best first) on the
    experiment and return its share key (the UI's ``?viewStateShareKey=`` parameter)."""
    objectives = [f"metrics.`{metric_name(k)}`" for k in metric_keys]
    view = {
        "searchFilter": f"tags.`{STUDY_TAG}` = '{study}'",
        "orderByKey": objectives[0] if objectives else "attributes.start_time",
        "orderByAsc": False,
        "lifecycleFilter": "Active",
        "selectedColumns": ["attributes.`Run Name`", *objectives, f"tags.`{FRONT_TAG}`", f"tags.`{ROLE_TAG}`"],
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": None,
    }
    _client(tracking_uri).set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + STUDY_VIEW_KEY, json.dumps(view))
    return STUDY_VIEW_KEY


def study_runs_url(ui_base: str, experiment_id: str, share_key: str) -> str:
    """Runs table of the study's experiment with the shared view: the parent run, its trials, the objectives."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={share_key}"


def find_run(tracking_uri: str, experiment_id: str, tags: dict[str, str]) -> str | None:
    client = _client(tracking_uri)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def start_parent_run(tracking_uri: str, experiment_id: str, study: str, params: dict[str, Any],
                     tags: dict[str, str]) -> str:
    """The study's parent run (reused on --resume)."""
    client = _client(tracking_uri)
    existing = find_run(tracking_uri, experiment_id, {STUDY_TAG: study, ROLE_TAG: "study"})
    if existing:
        client.set_terminated(existing, status="RUNNING")
        return existing
    run = client.create_run(experiment_id, run_name=f"study:{study}",
                            tags={STUDY_TAG: study, ROLE_TAG: "study", **tags})
    for key, value in params.items():
        client.log_param(run.info.run_id, key[:250], str(value)[:6000])
    return str(run.info.run_id)


def _finite_metrics(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[metric_name(key)] = float(value)
    return out


def trial_run_name(number: int | None, trial_id: str) -> str:
    """``trial 7`` (the Optuna trial number), or ``trial <Tune trial id>`` while the number is unknown."""
    return f"trial {number}" if number is not None else f"trial {trial_id}"


def trial_description(study: str, number: int | None, trial_id: str, params: dict[str, Any]) -> str:
    """The run's description (markdown): which trial of which study, and the values the search chose."""
    title = f"Trial {number} of study `{study}`" if number is not None else f"Trial of study `{study}`"
    lines = [f"{title} (Tune trial `{trial_id}`).", "", "Searched values:", ""]
    lines += [f"- `{key}` = {value}" for key, value in sorted(params.items())] or ["- none"]
    return "\n".join(lines)


class TrialRuns:
    """Child runs of one study, created lazily and idempotently per trial id.

    ``trial_numbers`` maps a Tune trial id to its Optuna trial number (None while unknown); it names the runs.
    It must pickle (Tune checkpoints the callback holding this object).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, study: str,
                 trial_numbers: Callable[[str], int | None] | None = None) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id, self.study = parent_run_id, study
        self.trial_numbers = trial_numbers
        self._runs: dict[str, str] = {}
        self._steps: dict[str, int] = {}

    def _number(self, trial_id: str) -> int | None:
        return self.trial_numbers(trial_id) if self.trial_numbers is not None else None

    def run_id(self, trial_id: str, params: dict[str, Any] | None = None) -> str:
        if trial_id in self._runs:
            return self._runs[trial_id]
        client = _client(self.tracking_uri)
        existing = find_run(self.tracking_uri, self.experiment_id, {TRIAL_TAG: trial_id, STUDY_TAG: self.study})
        if existing is None:
            number = self._number(trial_id)
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id, STUDY_TAG: self.study, ROLE_TAG: "trial",
                    NOTE_TAG: trial_description(self.study, number, trial_id, params or {})}
            if number is not None:
                tags[NUMBER_TAG] = str(number)
            run = client.create_run(self.experiment_id, run_name=trial_run_name(number, trial_id), tags=tags)
            existing = str(run.info.run_id)
            for key, value in (params or {}).items():
                client.log_param(existing, key[:250], str(value)[:6000])
        else:
            client.set_terminated(existing, status="RUNNING")
        self._runs[trial_id] = existing
        return existing

    def mark_front(self, numbers: dict[str, int], on_front: dict[str, bool]) -> int:
        """Tag every trial run of the study with ``pareto_front`` (``on_front``: Tune trial id -> on the front)
        and name it by its trial number (``numbers``: Tune trial id -> Optuna number) where it is not yet;
        returns the number of runs tagged."""
        client = _client(self.tracking_uri)
        query = f"tags.`{STUDY_TAG}` = '{self.study}' and tags.`{ROLE_TAG}` = 'trial'"
        tagged = 0
        for run in client.search_runs([self.experiment_id], filter_string=query, max_results=50_000):
            trial_id = run.data.tags.get(TRIAL_TAG, "")
            client.set_tag(run.info.run_id, FRONT_TAG, "true" if on_front.get(trial_id, False) else "false")
            number = numbers.get(trial_id)
            if number is not None and run.data.tags.get(NUMBER_TAG) != str(number):
                client.set_tag(run.info.run_id, NUMBER_TAG, str(number))
                client.set_tag(run.info.run_id, RUN_NAME_TAG, trial_run_name(number, trial_id))
                params = {k: v for k, v in run.data.params.items()}
                client.set_tag(run.info.run_id, NOTE_TAG, trial_description(self.study, number, trial_id, params))
            tagged += 1
        return tagged

    def mark_killed(self, trial_ids: set[str]) -> None:
        """Child runs of trials lost with a killed driver (never re-run by Tune) end as KILLED."""
        client = _client(self.tracking_uri)
        for trial_id in trial_ids:
            run_id = find_run(self.tracking_uri, self.experiment_id, {TRIAL_TAG: trial_id, STUDY_TAG: self.study})
            if run_id is not None:
                client.set_terminated(run_id, status="KILLED")

    def finish_left_running(self, outcomes: dict[str, tuple[dict[str, Any] | None, bool]]) -> list[str]:
        """Close the child runs still RUNNING after Tune has finished, from Tune's final results
        (``{trial id: (last result, failed)}``); returns the trial ids closed. A driver killed after Tune
        checkpointed a trial as done but before the MLflow callback ran leaves that run open, and a resumed
        Tune does not run the trial (nor the callback) again. Runs of trials without an outcome stay as they are."""
        client = _client(self.tracking_uri)
        query = (f"tags.`{STUDY_TAG}` = '{self.study}' and tags.`{ROLE_TAG}` = 'trial' "
                 "and attributes.status = 'RUNNING'")
        closed = []
        for run in client.search_runs([self.experiment_id], filter_string=query, max_results=50_000):
            trial_id = run.data.tags.get(TRIAL_TAG)
            if trial_id in outcomes:
                result, failed = outcomes[trial_id]
                self._runs[trial_id] = run.info.run_id
                self.finish(trial_id, result, failed)
                closed.append(trial_id)
        if closed:
            logger.warning("closed the MLflow runs of trials %s, left RUNNING by a killed driver", sorted(closed))
        return closed

    def log_result(self, trial_id: str, result: dict[str, Any]) -> None:
        run_id = self.run_id(trial_id)
        step = self._steps.get(trial_id, 0)
        self._steps[trial_id] = step + 1
        client = _client(self.tracking_uri)
        metrics = _finite_metrics({k: v for k, v in result.items() if k.startswith(("live.", "val.", "test."))})
        if metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, trial_id: str, result: dict[str, Any] | None, failed: bool) -> None:
        run_id = self.run_id(trial_id)
        client = _client(self.tracking_uri)
        if result:
            payload = result.get("metrics_json")
            if isinstance(payload, str):
                with tempfile.TemporaryDirectory() as tmp:
                    (Path(tmp) / "metrics.json").write_text(payload)
                    client.log_artifact(run_id, str(Path(tmp) / "metrics.json"))
                    mask = result.get("mask_json")
                    if isinstance(mask, str):
                        (Path(tmp) / "mask.json").write_text(mask)
                        client.log_artifact(run_id, str(Path(tmp) / "mask.json"))
                    envs = json.loads(payload).get("environments")
                    if envs:
                        (Path(tmp) / "environments.json").write_text(json.dumps(envs, indent=2))
                        client.log_artifact(run_id, str(Path(tmp) / "environments.json"))
        client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def flat_params(config: dict[str, Any]) -> dict[str, Any]:
    params = dict(config.get("params", config))
    return {k: v for k, v in params.items() if not isinstance(v, dict)}


def log_front(tracking_uri: str, parent_run_id: str, front_csv: Path, front_png: Path | None,
              metrics: dict[str, float], extra_files: list[Path] | None = None) -> None:
    client = _client(tracking_uri)
    for path in [front_csv, front_png, *(extra_files or [])]:
        if path is not None and path.exists():
            client.log_artifact(parent_run_id, str(path))
    for key, value in _finite_metrics(metrics).items():
        client.log_metric(parent_run_id, key, value)
    client.set_terminated(parent_run_id, status="FINISHED")
