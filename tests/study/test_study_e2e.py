"""Real studies end to end: real local Ray, real Optuna sqlite storage, real MLflow sqlite store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from painvrl.study.shipped import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]
SMOKE = CONFIG_DIR / "smoke.yaml"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _search(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "tune" / "search.py"), *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _mlflow_runs(study_dir: Path, name: str) -> pd.DataFrame:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    rows: list[dict[str, Any]] = [{"run_id": r.info.run_id, "status": r.info.status, **r.data.tags,
                                   **{f"metric:{k}": v for k, v in r.data.metrics.items()}} for r in runs]
    return pd.DataFrame(rows)


def _assert_study_consistent(study_dir: Path, name: str, n_trials: int, positive_hypervolume: bool = True) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    from painvrl.study.searcher import STALE_ATTR

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n_trials, "no trial lost, none run beyond the budget"
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    # the only other trials: asked by a driver that was killed before Tune checkpointed them (never re-run)
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(STALE_ATTR) for t in others)
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n_trials, "no duplicated trial"

    runs = _mlflow_runs(study_dir, name)
    parent = runs[runs["painvrl.role"] == "study"]
    trials = runs[(runs["painvrl.role"] == "trial") & (runs["status"] != "KILLED")]
    assert len(parent) == 1
    parent_id = parent["run_id"].iloc[0]
    assert len(trials) == n_trials, "one child run per trial, never a second one"
    assert trials["painvrl.trial_id"].is_unique
    assert (trials["mlflow.parentRunId"] == parent_id).all()
    assert (trials["status"] == "FINISHED").all()
    assert "metric:val.iid.recall_at_20" in trials.columns
    # as a person reads the runs table: trial runs named by number, described, the front selectable by a tag
    assert trials["mlflow.runName"].str.fullmatch(r"trial \d+").all()
    assert trials["mlflow.note.content"].str.contains("Searched values").all()
    assert set(trials["pareto_front"]) <= {"true", "false"}
    if positive_hypervolume:  # the reference is erm's point; against the best baseline it may be 0
        assert parent["metric:hypervolume"].iloc[0] > 0

    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"front.csv", "front.png", "study.yaml"} <= artifacts
    child_artifacts = {a.path for a in client.list_artifacts(trials["run_id"].iloc[0])}
    assert "metrics.json" in child_artifacts

    # the front logged to MLflow is exactly Optuna's non-dominated set
    front = pd.read_csv(client.download_artifacts(parent_id, "front.csv"))
    optuna_front = sorted(tuple(round(v, 9) for v in t.values) for t in study.best_trials)
    logged_front = sorted(tuple(round(v, 9) for v in row) for row in
                          front[["val.iid.recall@20", "val.ood.recall@20"]].itertuples(index=False))
    assert logged_front == optuna_front
    assert (trials["pareto_front"] == "true").sum() == len(study.best_trials)


def test_smoke_study_logs_trials_and_front(tmp_path: Path) -> None:
    result = _search(["--config", str(SMOKE), "--set", f"storage_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Pareto front of study 'smoke'" in result.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout
    _assert_study_consistent(tmp_path / "smoke", "smoke", n_trials=3)

    # The same study name for another problem (here other data): refused before Ray starts, instead of printing
    # the finished study's old front as the new one; the stored study is left as it was.
    changed = _search(["--config", str(SMOKE), "--set", f"storage_dir={tmp_path}", "--set", "base.dataset.seed=1"],
                      timeout=120)
    assert changed.returncode == 2, changed.stderr[-4000:]
    assert "'name'" in changed.stderr and "dataset_fingerprint" in changed.stderr
    assert "base_config_hash" in changed.stderr  # the resolved base config changed too (dataset.seed)
    _assert_study_consistent(tmp_path / "smoke", "smoke", n_trials=3)


def test_bad_study_config_fails_before_any_trial(tmp_path: Path) -> None:
    result = _search(["--config", str(SMOKE), "--set", f"storage_dir={tmp_path}",
                      "--set", "objectives=[{metric: val.iid.recall@99}]"], timeout=120)
    assert result.returncode == 2
    assert "objectives[0].metric" in result.stderr
    assert not (tmp_path / "smoke").exists()


def test_killed_study_resumes_without_lost_or_duplicated_trials(tmp_path: Path) -> None:
    import optuna

    args = ["--config", str(SMOKE), "--set", f"storage_dir={tmp_path}", "--set", "num_samples=4",
            "--set", "name=resume", "--set", "baselines=[vbpr]"]
    process = subprocess.Popen([sys.executable, str(REPO / "tune" / "search.py"), *args], cwd=REPO, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    storage = f"sqlite:///{tmp_path / 'resume' / 'optuna.db'}"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            time.sleep(1.0)
            try:
                study = optuna.load_study(study_name="resume", storage=storage)
            except Exception:  # storage not created yet
                continue
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if len(done) >= 2:
                break
        else:
            pytest.fail("the study never completed 2 trials")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        process.wait()
    # A kill between Tune checkpointing a trial as done and the MLflow callback leaves its run RUNNING (seen in
    # CI); reopen every finished child run to stand in for that window: the resume must close them.
    from mlflow.tracking import MlflowClient

    runs = _mlflow_runs(tmp_path / "resume", "resume")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'resume' / 'mlflow.db'}")
    for run_id in runs[(runs["painvrl.role"] == "trial") & (runs["status"] == "FINISHED")]["run_id"]:
        client.set_terminated(run_id, status="RUNNING")
    baseline_runs = set(runs[runs["painvrl.role"] == "baseline"]["run_id"])
    assert len(baseline_runs) == 1, "the baseline is trained before the first trial"
    result = _search([*args, "--resume"])
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_study_consistent(tmp_path / "resume", "resume", n_trials=4, positive_hypervolume=False)
    runs = _mlflow_runs(tmp_path / "resume", "resume")
    assert set(runs[runs["painvrl.role"] == "baseline"]["run_id"]) == baseline_runs, "no baseline retrained"


def test_baselines_are_drawn_compared_and_never_retrained(tmp_path: Path) -> None:
    args = ["--config", str(SMOKE), "--set", f"storage_dir={tmp_path}", "--set", "name=baselines",
            "--set", "baselines=[ultragcn, {method: oracle, model: vbpr}]", "--set", "baseline_seeds=[0,1]"]
    result = _search(args)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "baselines: 4 trained" in result.stdout and "dominated by" in result.stdout
    study_dir = tmp_path / "baselines"
    _assert_study_consistent(study_dir, "baselines", n_trials=3, positive_hypervolume=False)
    runs = _mlflow_runs(study_dir, "baselines")
    baselines = runs[runs["painvrl.role"] == "baseline"]
    assert sorted(zip(baselines["painvrl.method"], baselines["painvrl.model"], baselines["painvrl.seed"],
                      strict=True)) == [("erm", "ultragcn", "0"), ("erm", "ultragcn", "1"), ("oracle", "vbpr", "0"),
                                        ("oracle", "vbpr", "1")]
    assert baselines["painvrl.config_hash"].is_unique and baselines["painvrl.data_fingerprint"].nunique() == 1

    table = pd.read_csv(study_dir / "baselines.csv")
    assert list(table["baseline"]) == ["erm/ultragcn", "oracle/vbpr"] and set(table["seeds"]) == {2}
    assert list(table["method"]) == ["erm", "oracle"] and list(table["model"]) == ["ultragcn", "vbpr"]
    assert {"dominated by", "dominates front", "test.iid.recall@20", "test.ood.recall@20"} <= set(table.columns)
    # the reference point is the best baseline (largest IID + OOD validation recall)
    sums = table["val.iid.recall@20"] + table["val.ood.recall@20"]
    best = table.loc[sums.idxmax(), ["val.iid.recall@20", "val.ood.recall@20"]].tolist()
    assert f"reference point {best}" in result.stdout.replace("\n", " ")
    front = pd.read_csv(study_dir / "front.csv")
    assert front["test.iid.recall@20"].notna().all() and front["test.ood.recall@20"].notna().all()
    report = (study_dir / "report" / "report.html").read_text()
    assert "Baselines against the front" in report and "oracle/vbpr" in report

    again = _search([*args, "--resume"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert "baselines: 0 trained, 4 found in MLflow" in again.stdout
    rerun = _mlflow_runs(study_dir, "baselines")
    assert set(rerun[rerun["painvrl.role"] == "baseline"]["run_id"]) == set(baselines["run_id"])
