"""``painvrl study``: shipped study configs by name or path, and the smoke study through the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from painvrl.cli import main
from painvrl.errors import PainvrlInputError
from painvrl.study.shipped import CONFIG_DIR, is_shipped, resolve_study_config, shipped_names
from painvrl.study.spec import load_study

REPO = Path(__file__).resolve().parents[2]


def test_every_documented_config_is_shipped_and_loads() -> None:
    assert {"default", "smoke", "movielens", "tiktok", "gpu-cluster"} <= set(shipped_names())
    for name in shipped_names():
        assert load_study(name).name == name


@pytest.mark.parametrize("spelling", ["smoke", "smoke.yaml", "tune/configs/smoke.yaml",
                                      str(REPO / "tune" / "configs" / "smoke.yaml")])
def test_a_shipped_config_resolves_by_name_and_by_its_repository_path(spelling: str) -> None:
    assert resolve_study_config(spelling) == CONFIG_DIR / "smoke.yaml"


def test_an_existing_file_wins_and_its_data_paths_stay_relative_to_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    text = (CONFIG_DIR / "tiktok.yaml").read_text()
    own = tmp_path / "studies" / "smoke.yaml"
    own.parent.mkdir()
    own.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert resolve_study_config("studies/smoke.yaml") == Path("studies/smoke.yaml") and not is_shipped(own)
    assert load_study(own).base["dataset"]["path"] == str(tmp_path / "studies" / "data" / "tiktok")
    # the shipped copy reads data relative to the working directory (an installed package has none beside it)
    assert load_study("tiktok").base["dataset"]["path"] == str(tmp_path / "data" / "tiktok")


@pytest.mark.parametrize("spelling", ["nope", "configs/smoke.yaml", "tune/configs/nope.yaml"])
def test_an_unknown_config_names_the_shipped_ones(spelling: str) -> None:
    with pytest.raises(PainvrlInputError, match=r"shipped: .*smoke"):
        resolve_study_config(spelling)


def test_painvrl_study_runs_the_smoke_config_and_the_script_is_the_same_command(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "painvrl", "study", "--config", "smoke", "--set", "num_samples=2",
                           "--set", f"storage_dir={tmp_path / 'runs'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Pareto front of study 'smoke'" in done.stdout
    assert (tmp_path / "runs" / "smoke" / "front.csv").is_file()
    bad = subprocess.run([sys.executable, str(REPO / "tune" / "search.py"), "--config", "nope"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("painvrl: error: --config nope")
    assert "Traceback" not in bad.stderr


def test_help_lists_the_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for name in ("train", "study", "compare", "suite", "report", "download"):
        assert f"    {name} " in listed
    assert "download-movielens" not in listed
