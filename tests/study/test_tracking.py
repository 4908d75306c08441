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


def test_trial_runs_are_named_by_number_described_and_tagged_on_the_front(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, "s", tmp_path / "artifacts")
    parent = tracking.start_parent_run(uri, experiment, "s", {}, {})
    runs = tracking.TrialRuns(uri, experiment, parent, "s", {"a": 7, "b": 8}.get)
    first = runs.run_id("a", {"mask.sparsity_weight": 0.01, "environments.n_envs": 3})
    second = runs.run_id("c", {"mask.sparsity_weight": 0.1})  # its number is not known yet

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(first)
    assert run.info.run_name == "trial 7" and run.data.tags[tracking.NUMBER_TAG] == "7"
    note = run.data.tags["mlflow.note.content"]
    assert "Trial 7 of study `s`" in note and "- `mask.sparsity_weight` = 0.01" in note
    assert "- `environments.n_envs` = 3" in note
    assert client.get_run(second).info.run_name == "trial c"

    assert runs.mark_front({"a": 7, "c": 9}, {"a": True, "c": False}) == 2
    front = client.search_runs([experiment], filter_string="tags.pareto_front = 'true'")
    assert [r.info.run_id for r in front] == [first]
    renamed = client.get_run(second)
    assert renamed.info.run_name == "trial 9" and renamed.data.tags[tracking.FRONT_TAG] == "false"
    assert "Trial 9 of study `s`" in renamed.data.tags["mlflow.note.content"]


def test_a_summarised_study_tags_its_front_and_draws_the_erm_reference(tmp_path: Path) -> None:
    """The layout of a default study (erm_baseline: the erm run is the reference point, no baselines): trial runs
    named by number with ``pareto_front`` tags that select exactly the front, and the erm point on front.png."""
    import optuna

    from painvrl.analysis.publish import publish_study, reference_marker
    from painvrl.study.driver import reference_label, summarise_study
    from painvrl.study.searcher import TUNE_TRIAL_ATTR
    from painvrl.study.spec import Objective, StudySpec
    from painvrl.study.storage import TrialNumbers

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    keys = ["val.iid.recall@20", "val.ood.recall@20"]
    spec = StudySpec(name="s", storage_dir=str(tmp_path), tracking_uri=uri, num_samples=4, erm_baseline=True,
                     objectives=[Objective(k) for k in keys])
    spec.study_dir().mkdir(parents=True)
    experiment = tracking.ensure_experiment(uri, "s", spec.study_dir() / "artifacts")
    parent = tracking.start_parent_run(uri, experiment, "s", {}, {})
    study = optuna.create_study(study_name="s", storage=spec.optuna_url(), directions=spec.directions())
    runs = tracking.TrialRuns(uri, experiment, parent, "s", TrialNumbers(spec.optuna_url(), "s"))
    distribution = {"mask.pref_ood": optuna.distributions.FloatDistribution(0.0, 1.0)}
    points = {"t0": (0.30, 0.10), "t1": (0.20, 0.20), "t2": (0.15, 0.12), "t3": (0.25, 0.15)}
    for trial_id, values in points.items():
        study.add_trial(optuna.trial.create_trial(params={"mask.pref_ood": values[1]}, distributions=distribution,
                                                  values=list(values), user_attrs={TUNE_TRIAL_ATTR: trial_id}))
        runs.run_id(trial_id, {"mask.pref_ood": values[1]})
        runs.finish(trial_id, dict(zip(keys, values, strict=True)), failed=False)

    erm = [0.12, 0.08]
    outcome = summarise_study(spec, erm, uri, parent, None, reference_label(spec, []))
    client = MlflowClient(tracking_uri=uri)
    named = {r.info.run_name for r in client.search_runs([experiment], "tags.`painvrl.role` = 'trial'")}
    assert named == {"trial 0", "trial 1", "trial 2", "trial 3"}
    front = client.search_runs([experiment], filter_string="tags.pareto_front = 'true'")
    assert sorted(r.info.run_name for r in front) == ["trial 0", "trial 1", "trial 3"]
    assert {r.data.tags[tracking.TRIAL_TAG] for r in front} == set(outcome.front["trial_id"])
    assert reference_marker(outcome) == ("erm (reference point)", 0.12, 0.08)
    written = publish_study(outcome)
    assert spec.study_dir() / "front.png" in written
