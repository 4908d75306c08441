from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from painvrl.cli import main, train_summary

TINY = """\
method: {method}
dataset: {{name: synthetic, synthetic: {{n_users: 60, n_items: 80, interactions_per_user: 10, modality_dims: [6, 6]}}}}
model: {{k_id: 8, k_f: 8, n_negatives: 5}}
train: {{epochs: 2, batch_size: 128, progress: false, device: cpu}}
"""


def write_config(folder: Path, method: str = "erm") -> Path:
    path = folder / f"{method}.yaml"
    path.write_text(TINY.format(method=method))
    return path


def test_train_writes_the_run_folder_with_the_contract_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    out = tmp_path / "run"
    code = main(["train", "--config", str(write_config(tmp_path)), "--set", "train.epochs=3", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "erm"
    assert {"source", "metric", "epoch", "value"} <= set(metrics["selection"])
    assert metrics["selection"]["source"] == "iid" and metrics["selection"]["metric"] == "recall@20"
    for section in ("val", "test"):
        block = metrics[section]
        assert {"iid", "ood", "worst_env", "envs", "spread"} <= set(block)  # synthetic data has an OOD split
        assert {"recall@20", "ndcg@10", "precision@20", "hit@20"} <= set(block["iid"])
        assert set(block["envs"]) == {"0", "1"}  # ground-truth environments of the synthetic benchmark
    assert {"density", "per_modality", "fraction_open"} <= set(metrics["mask"])
    assert "sizes" in metrics["environments"]
    assert {"train", "evaluate", "total"} <= set(metrics["timing"])
    prov = metrics["provenance"]
    assert {"seed", "config_hash", "versions", "git_commit", "dataset"} <= set(prov)
    assert len(metrics["history"]) == 3
    assert "epochs: 3" in (out / "config.yaml").read_text()
    assert (out / "checkpoint" / "model.pt").is_file() and not (out / "mask.npy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("erm: selected epoch") and f"; {metrics['timing']['total']:.0f} s;" in summary


def test_the_summary_reports_the_run_time_once() -> None:
    metrics = {"method": "painvrl", "selection": {"epoch": 3, "source": "iid", "metric": "recall@20"},
               "test": {"iid": {"recall@20": 0.05}},
               "timing": {"pretrain": 10.0, "mask": 20.0, "final": 9.4, "evaluate": 0.5, "total": 40.2}}
    assert "; 40 s;" in train_summary("run", metrics)
    del metrics["timing"]["total"]
    assert "; 40 s;" in train_summary("run", metrics)


def test_oracle_run_writes_the_true_mask(tmp_path: Path) -> None:
    out = tmp_path / "oracle"
    assert main(["train", "--config", str(write_config(tmp_path, "oracle")), "--output", str(out)]) == 0
    mask = np.load(out / "mask.npy", allow_pickle=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(np.unique(mask)) <= {0.0, 1.0} and metrics["mask"]["auc"] == 1.0
    assert metrics["mask"]["density"] == pytest.approx(float(mask.mean()))


@pytest.mark.parametrize(("args", "field"), [
    (["--set", "train.lr=-1"], "train.lr"),
    (["--set", "train.bogus=1"], "train.bogus"),
    (["--set", "no_equals_sign"], "KEY=VALUE"),
    (["--set", "eval.selection_metric=recall@50"], "eval.selection_metric"),
    (["--set", "environments.source=ground_truth", "--set", "environments.n_envs=3"], "environments.n_envs"),
    (["--set", "environments.source=ground_truth", "--set", "dataset.name=movielens", "--set",
      "dataset.path=/nonexistent"], "environments.source"),
    (["--set", "environments.source=oracle"], "environments.source"),
])
def test_bad_set_exits_2_naming_the_field_and_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               args: list[str], field: str) -> None:
    out = tmp_path / "run"
    code = main(["train", "--config", str(write_config(tmp_path)), *args, "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("painvrl: error:") and field in err and "Traceback" not in err
    assert not out.exists()


def test_error_during_the_run_leaves_no_partial_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("dataset: {name: mmrec, path: does-not-exist}\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--output", str(out)]) == 2
    assert "painvrl: error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_bad_config_file_and_non_empty_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: magic\n")
    assert main(["validate-config", "--config", str(bad)]) == 2
    assert "method" in capsys.readouterr().err
    assert main(["validate-config", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert main(["train", "--config", str(write_config(tmp_path)), "--output", str(busy)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (busy / "keep.txt").exists()


def test_validate_config_and_data_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["validate-config", "--config", str(config), "--set", "train.lr=0.01"]) == 0
    assert "lr: 0.01" in capsys.readouterr().out
    assert main(["data-summary", "--config", str(config)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_users"] == 60 and summary["n_items"] == 80


def test_python_dash_m_painvrl(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "painvrl", "validate-config", "--config",
                             str(write_config(tmp_path)), "--set", "train.epochs=abc"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert result.returncode == 2
    assert "train.epochs" in result.stderr and "Traceback" not in result.stderr
