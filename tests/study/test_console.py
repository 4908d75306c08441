"""What a user sees: the smoke study run as a subprocess prints a short, readable console and nothing else.

A real local Ray, Optuna sqlite storage and an MLflow sqlite store (the shipped smoke config, a few seconds of
training); the console must be a start line, the progress bar, the front table and where the results went.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_search(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_smoke_study_console_is_short_and_ends_with_the_front(tmp_path: Path) -> None:
    result = _run_search("--config", "smoke", "--set", f"storage_dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    lines = output.splitlines()
    assert len(lines) < 80, f"{len(lines)} console lines:\n{output[-4000:]}"
    assert "tensorboardX" not in output
    assert "Trial status" not in output and "Configuration for experiment" not in output
    assert "Downloading artifacts" not in output
    assert lines[0].startswith("study 'smoke': painvrl on synthetic, 3 trials")
    stdout = result.stdout.splitlines()
    front_at = next(i for i, line in enumerate(stdout) if line.startswith("Pareto front of study 'smoke'"))
    assert "val.iid.recall@20" in stdout[front_at + 1] and "val.ood.recall@20" in stdout[front_at + 1]
    assert stdout[-2].startswith("MLflow UI: mlflow ui --backend-store-uri sqlite:///")
    assert "#/experiments/" in stdout[-1] and "viewStateShareKey=" in stdout[-1]
    assert "trials: 100%" in result.stderr  # the progress bar reached the end


def test_search_help_describes_every_option() -> None:
    result = _run_search("--help", timeout=60)
    assert result.returncode == 0
    for option in ("--config", "--set", "--resume", "--verbose"):
        assert option in result.stdout
    assert "ray job submit" in result.stdout
