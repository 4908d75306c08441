"""The wheel, installed into a fresh virtual environment outside the repository, ships the workflows: the
``painvrl`` command lists them and runs the shipped smoke study from an unrelated folder (no network: the
wheel builds without isolation and installs without dependencies; the new environment sees the test
environment's packages through a path file)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("study", "compare", "suite", "report", "download")


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for name in ("PYTHONPATH", "RAY_ADDRESS", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV"):
        env.pop(name, None)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_installed_wheel_runs_the_smoke_study(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "painvrl", source / "painvrl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w",
          str(wheels)], cwd=tmp_path)
    (wheel,) = wheels.glob("painvrl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"painvrl/study/configs/{n}.yaml" for n in ("default", "smoke", "movielens", "tiktok", "gpu-cluster")
            } <= names

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    # the dependencies only (a plain path entry: the test environment's editable painvrl is not activated)
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import painvrl; print(painvrl.__file__)"], cwd=work).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where
    command = env_dir / "bin" / "painvrl"
    listed = _run([str(command), "--help"], cwd=work).stdout
    assert all(name in listed for name in COMMANDS)
    done = _run([str(command), "study", "--config", "smoke", "--set", "num_samples=2"], cwd=work)
    assert "Pareto front of study 'smoke'" in done.stdout
    assert (work / "painvrl-runs" / "smoke" / "front.csv").is_file()
