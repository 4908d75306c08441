"""MLflow child-run bookkeeping against a real sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from painvrl.study import tracking


def test_runs_left_running_by_a_killed_driver_are_closed_from_tunes_results(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, "s", tmp_path / "artifacts")
    parent = tracking.start_parent_run(uri, experiment, "s", {}, {})
    runs = tracking.TrialRuns(uri, experiment, parent, "s")
    done, errored, lost, finished = (runs.run_id(t) for t in ("done", "errored", "lost", "finished"))
    runs.finish("finished", {"val.iid.recall@20": 0.3}, failed=False)

    # a fresh driver (resume): its TrialRuns has no memory of the runs
    resumed = tracking.TrialRuns(uri, experiment, parent, "s")
    outcomes = {"done": ({"val.iid.recall@20": 0.2, "metrics_json": json.dumps({"seed": 0})}, False),
                "errored": (None, True), "finished": ({"val.iid.recall@20": 0.3}, False)}
    assert sorted(resumed.finish_left_running(outcomes)) == ["done", "errored"]

    client = MlflowClient(tracking_uri=uri)
    status = {run_id: client.get_run(run_id).info.status for run_id in (done, errored, lost, finished)}
    assert status == {done: "FINISHED", errored: "FAILED", lost: "RUNNING", finished: "FINISHED"}
    assert [a.path for a in client.list_artifacts(done)] == ["metrics.json"]
    assert resumed.finish_left_running(outcomes) == []  # nothing left open


def test_settled_tune_trials_reads_ended_optuna_trials_and_skips_stale_ones() -> None:
    import optuna

    from painvrl.study.searcher import STALE_ATTR, TUNE_TRIAL_ATTR, settled_tune_trials

    study = optuna.create_study(directions=["maximize"])
    for tune_id, state, stale in (("a", "complete", False), ("b", "fail", False), ("c", "fail", True),
                                  ("d", "running", False)):
        trial = study.ask()
        trial.set_user_attr(TUNE_TRIAL_ATTR, tune_id)
        if stale:
            trial.set_user_attr(STALE_ATTR, True)
        if state == "complete":
            study.tell(trial, 0.5)
        elif state == "fail":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert settled_tune_trials(study) == {"a": False, "b": True}
