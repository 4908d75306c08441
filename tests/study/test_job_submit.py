"""`ray job submit` of the smoke study to a real local Ray head on loopback (STACK.md recipe)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_bin() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


@pytest.fixture()
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    env = dict(os.environ)
    # A throwaway loopback test cluster: token auth off on both sides (STACK.md). Real clusters keep it on.
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"})
    env.pop("RAY_ADDRESS", None)
    # the job's `python` must be this interpreter (the one with painvrl and ray installed)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    gcs_port, dashboard_port = _free_port(), _free_port()
    # Ray's unix sockets live under --temp-dir and must stay under 107 bytes: a short folder, not tmp_path
    temp_dir = tempfile.mkdtemp(prefix="pvr-", dir="/tmp")
    start = subprocess.run(
        [_ray_bin(), "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--num-cpus=3",
         f"--object-store-memory={256 * 1024 * 1024}", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        yield f"http://127.0.0.1:{dashboard_port}", env
    finally:
        subprocess.run([_ray_bin(), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ray job submit``, retried while the head's job agent is still starting (slow on a loaded machine)."""
    for _ in range(24):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        if done.returncode == 0 or "No available agent to submit job" not in done.stdout + done.stderr:
            return done
        time.sleep(5)
    return done


def test_job_submit_runs_the_smoke_study(ray_head: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = ray_head
    storage = tmp_path / "runs"
    submit = _submit(
        [_ray_bin(), "job", "submit", "--address", address, "--working-dir", str(REPO),
         "--runtime-env-json", '{"excludes": [".venv", ".git", "painvrl-runs", "benchmarks", "*.db"]}',
         "--", "python", "tune/search.py", "--config", "tune/configs/smoke.yaml",
         "--set", f"storage_dir={storage}", "--set", "num_samples=2"], env)
    assert submit.returncode == 0, (submit.stdout[-3000:], submit.stderr[-3000:])
    output = re.sub(r"\x1b\[[0-9;]*m", "", submit.stdout + submit.stderr)
    assert re.search(r"Job 'raysubmit_\w+' succeeded", output), output[-3000:]
    assert "Pareto front of study 'smoke'" in output

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'smoke' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(r.data.tags.get("painvrl.role", "") for r in runs)
    assert roles == ["study", "trial", "trial"]


TIKTOK = REPO.parent / "shared" / "data" / "tiktok"


@pytest.mark.skipif(not (TIKTOK / "tiktok.inter").exists(), reason="the TikTok copy is not on this machine")
def test_job_submit_runs_the_tiktok_study_with_baselines(ray_head: tuple[str, dict[str, str]],
                                                         tmp_path: Path) -> None:
    # tune/configs/tiktok.yaml as shipped, on a budget: one trial and one baseline, a few epochs
    address, env = ray_head
    storage = tmp_path / "runs"
    budget = ["num_samples=1", "baselines=[vbpr]", "search.model.name={kind: categorical, choices: [vbpr]}",
              f"base.dataset.path={TIKTOK}", "base.train.epochs=2", "base.train.eval_every=1",
              "base.painvrl.rounds=1", "base.painvrl.pretrain_epochs=1", "base.environments.max_iters=1",
              "base.environments.env_epochs=1", "base.mask.epochs=1"]
    submit = _submit(
        [_ray_bin(), "job", "submit", "--address", address, "--working-dir", str(REPO),
         "--runtime-env-json", '{"excludes": [".venv", ".git", "painvrl-runs", "benchmarks", "*.db", "data"]}',
         "--", "python", "tune/search.py", "--config", "tune/configs/tiktok.yaml",
         "--set", f"storage_dir={storage}", *(arg for item in budget for arg in ("--set", item))], env)
    assert submit.returncode == 0, (submit.stdout[-3000:], submit.stderr[-3000:])
    output = re.sub(r"\x1b\[[0-9;]*m", "", submit.stdout + submit.stderr)
    assert "Pareto front of study 'tiktok'" in output and "erm/vbpr" in output

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'tiktok' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiktok")
    assert experiment is not None
    roles = sorted(r.data.tags.get("painvrl.role", "") for r in client.search_runs([experiment.experiment_id]))
    assert roles == ["baseline", "study", "trial"]
    assert (storage / "tiktok" / "front.png").exists() and (storage / "tiktok" / "baselines.csv").exists()
