"""A real study whose trials are 2-worker Ray Train runs (TorchTrainer, gloo) inside Tune trials.

Real local Ray (3 CPUs: 1 trial driver + 2 workers), real Optuna sqlite storage, real MLflow sqlite store; the
proof that the Train path ran is the Ray Train run folders under the study's train/ folder, one per trial, each
with its final checkpoint (metrics.json + FINAL written by rank 0), and Ray Train's own log line for a worker group
of size 2. About 65-80 s on 2 cores (two Train runs, each starting 3 processes that import ray + torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from painvrl.study.shipped import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]
SMOKE = CONFIG_DIR / "smoke.yaml"
NAME = "train-trials"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_study_trials_run_as_two_worker_ray_train_runs(tmp_path: Path) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    args = ["--config", str(SMOKE), "--set", f"storage_dir={tmp_path}", "--set", f"name={NAME}",
            "--set", "trial_num_workers=2", "--set", "trial_cpus=1", "--set", "max_concurrent_trials=1",
            "--set", "num_samples=2", "--set", "ray_num_cpus=3"]
    result = subprocess.run([sys.executable, str(REPO / "tune" / "search.py"), *args], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert f"Pareto front of study '{NAME}'" in result.stdout
    study_dir = tmp_path / NAME
    # Ray Train's controller logs (forwarded to the driver) show a 2-worker group per trial
    assert (result.stdout + result.stderr).count("Started training worker group of size 2") >= 2

    # Optuna: exactly the budget, all COMPLETE, with both objectives told
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{study_dir / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(len(t.values) == 2 and all(0.0 <= v <= 1.0 for v in t.values) for t in study.trials)
    trial_ids = {str(t.user_attrs["tune_trial_id"]) for t in study.trials}
    assert len(trial_ids) == 2

    # MLflow: one parent, two FINISHED children tagged with the parent, val metrics, metrics.json artifacts
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(NAME)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("painvrl.role") == "study"]
    children = [r for r in runs if r.data.tags.get("painvrl.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    parent_id = parents[0].info.run_id
    assert parents[0].data.metrics["hypervolume"] > 0
    assert {r.data.tags["painvrl.trial_id"] for r in children} == trial_ids
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.info.status == "FINISHED"
        for key in ("val.iid.recall_at_20", "val.ood.recall_at_20", "test.iid.recall_at_20"):
            assert 0.0 <= child.data.metrics[key] <= 1.0, key
        assert "metrics.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
        logged = json.loads(Path(client.download_artifacts(child.info.run_id, "metrics.json",
                                                           str(tmp_path))).read_text())
        assert logged["method"] == "painvrl"
        assert logged["val"]["iid"]["recall@20"] == pytest.approx(
            child.data.metrics["val.iid.recall_at_20"])
        (tmp_path / "metrics.json").unlink()

    # The Train path really ran: one Ray Train run folder per trial, named after the Tune trial id, whose last
    # checkpoint is the final one written by rank 0 of the 2-worker group
    train_dir = study_dir / "train"
    assert {p.name for p in train_dir.iterdir() if p.is_dir()} == {f"trial-{t}" for t in trial_ids}
    for trial_id in trial_ids:
        finals = sorted((train_dir / f"trial-{trial_id}").glob("checkpoint_*/FINAL"))
        assert finals, f"no final Ray Train checkpoint for trial {trial_id}"
        final_metrics = json.loads((finals[-1].parent / "metrics.json").read_text())
        assert final_metrics["method"] == "painvrl"
