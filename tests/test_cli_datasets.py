"""`painvrl train` on every data source: generated MMRec / MMGCN files, ml-latest-small, and every method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from format_builders import write_mmgcn, write_mmrec

from painvrl.cli import main

SMALL = ["--set", "model.k_id=8", "--set", "model.k_f=8", "--set", "model.n_negatives=5", "--set", "train.epochs=2",
         "--set", "train.batch_size=256", "--set", "train.progress=false"]
PAINVRL_FAST = ["--set", "painvrl.rounds=1", "--set", "painvrl.pretrain_epochs=1", "--set", "environments.max_iters=1",
                "--set", "environments.env_epochs=1", "--set", "mask.epochs=1", "--set", "mask.warmup_steps=1"]
SHARED_ML = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-latest-small"


def _train(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "run"
    assert main(["train", *SMALL, *args, "--output", str(out)]) == 0
    metrics: dict = json.loads((out / "metrics.json").read_text())
    assert (out / "config.yaml").is_file() and (out / "checkpoint" / "model.pt").is_file()
    return metrics


def test_train_on_mmrec_files_with_explicit_ood(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path / "mmrec", with_ood=True)
    metrics = _train(tmp_path, "--set", "dataset.name=mmrec", "--set", f"dataset.path={folder}",
                     "--set", "dataset.split=explicit", "--set", "dataset.ood=explicit")
    assert metrics["method"] == "erm"
    assert "recall@20" in metrics["test"]["iid"] and "recall@20" in metrics["test"]["ood"]


@pytest.mark.parametrize("variant", ["movielens", "tiktok"])
def test_train_on_mmgcn_files(tmp_path: Path, variant: str) -> None:
    folder = write_mmgcn(tmp_path / "mmgcn", variant=variant)
    metrics = _train(tmp_path, "--set", "dataset.name=mmgcn", "--set", f"dataset.path={folder}",
                     "--set", "dataset.split=explicit")
    assert metrics["test"]["iid"]["n_users"] > 0
    assert "ood" not in metrics["test"]  # the format has no OOD split and none was asked for


@pytest.mark.skipif(not SHARED_ML.is_dir(), reason="ml-latest-small is not beside the repository")
def test_train_on_movielens_with_temporal_ood(tmp_path: Path) -> None:
    metrics = _train(tmp_path, "--set", "dataset.name=movielens", "--set", f"dataset.path={SHARED_ML}",
                     "--set", "dataset.movielens.text_features=derived", "--set", "dataset.ood=temporal",
                     "--set", "dataset.temporal_scope=user")
    assert metrics["test"]["ood"]["n_users"] > 100
    assert set(metrics["provenance"]["dataset"]["modalities"]) == {"title", "tags", "genre_year"}


@pytest.mark.parametrize("method", ["painvrl", "invrl"])
def test_train_painvrl_and_invrl_on_tiny_synthetic(tmp_path: Path, method: str) -> None:
    metrics = _train(tmp_path, "--set", f"method={method}", "--set", "dataset.synthetic.n_users=80",
                     "--set", "dataset.synthetic.n_items=100", "--set", "dataset.synthetic.modality_dims=[6,6]",
                     *PAINVRL_FAST)
    assert metrics["method"] == method
    mask = np.load(tmp_path / "run" / "mask.npy", allow_pickle=False)
    assert mask.shape == (12,) and ((mask >= 0) & (mask <= 1)).all()
    assert 0.0 <= metrics["mask"]["auc"] <= 1.0
    assert len(metrics["environments"]["sizes"]) == 2


def test_nan_features_exit_2_naming_the_file_and_leave_no_output(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_mmrec(tmp_path / "mmrec", with_ood=False)
    feature_file = sorted(folder.glob("*_feat.npy"))[0]
    features = np.load(feature_file)
    features[3, 1] = np.nan
    np.save(feature_file, features)
    out = tmp_path / "run"
    code = main(["train", *SMALL, "--set", "dataset.name=mmrec", "--set", f"dataset.path={folder}",
                 "--output", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert feature_file.name in err and "NaN" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]
