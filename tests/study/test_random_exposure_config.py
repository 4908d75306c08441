"""The shipped ``random-exposure`` study: MMRec-layout data whose random-exposure rows (x_label 4) are the OOD
split, with half of each user's of them carved into OOD validation for the OOD objective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from format_builders import write_mmrec

from painvrl.data.registry import load_dataset
from painvrl.study.shipped import shipped_names
from painvrl.study.spec import load_study
from painvrl.training.pipeline import run_pipeline

N_USERS = 40


def _random_exposure_folder(folder: Path) -> tuple[Path, list[list[int]]]:
    """A tiny MMRec folder whose OOD rows are all x_label 4 (two per user: the toy's OOD valid and test rows),
    as a random-exposure set ships them; returns the folder and its x_label 4 (user, item) pairs."""
    write_mmrec(folder, n_users=N_USERS, n_items=60, with_ood=True)
    inter = folder / "toy.inter"
    frame = pd.read_csv(inter, sep="\t")
    frame.loc[frame["x_label"] == 3, "x_label"] = 4
    frame.to_csv(inter, sep="\t", index=False)
    assert (frame["x_label"] == 4).sum() == 2 * N_USERS and not (frame["x_label"] == 3).any()
    return folder, frame.loc[frame["x_label"] == 4, ["userID", "itemID"]].to_numpy().tolist()


def test_the_config_is_shipped_and_reads_data_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "random-exposure" in shipped_names()
    monkeypatch.chdir(tmp_path)
    spec = load_study("random-exposure")
    assert spec.name == "random-exposure"
    assert spec.base["dataset"]["path"] == str(tmp_path / "data" / "random-exposure")
    base = spec.base_config()
    assert (base.dataset.name, base.dataset.split, base.dataset.ood) == ("mmrec", "explicit", "explicit")
    assert base.dataset.ood_val_fraction == 0.5
    # The OOD objective stays on OOD validation (no fallback to the worst environment: the data has OOD rows).
    assert spec.metric_keys() == ["val.iid.recall@20", "val.ood.recall@20"]
    assert {b.method for b in spec.baselines} == {"erm", "ips"}


@pytest.mark.parametrize("where", ["default", "command line"])
def test_x_label_4_rows_become_ood_validation_and_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        where: str) -> None:
    if where == "default":
        folder, ood_rows = _random_exposure_folder(tmp_path / "data" / "random-exposure")
        monkeypatch.chdir(tmp_path)
        spec = load_study("random-exposure")
    else:
        folder, ood_rows = _random_exposure_folder(tmp_path / "coat")
        spec = load_study("random-exposure", [f"base.dataset.path={folder}"])
    data = load_dataset(spec.base_config().dataset)
    assert data.info["ood_source"] == "explicit" and data.has_ood_validation()
    assert data.ood_val is not None and data.ood_test is not None
    # floor(0.5 * 2) of each user's two random-exposure rows is OOD validation, the other OOD test.
    assert np.bincount(data.ood_val[:, 0], minlength=N_USERS).tolist() == [1] * N_USERS
    assert np.bincount(data.ood_test[:, 0], minlength=N_USERS).tolist() == [1] * N_USERS
    assert sorted(np.concatenate([data.ood_val, data.ood_test]).tolist()) == sorted(ood_rows)


def test_a_trial_of_the_config_reports_the_ood_objective(tmp_path: Path) -> None:
    folder, _ = _random_exposure_folder(tmp_path / "coat")
    spec = load_study("random-exposure", [
        f"base.dataset.path={folder}", "base.method=erm", "base.model.name=vbpr", "base.model.k_id=4",
        "base.model.k_f=4", "base.model.n_negatives=5", "base.model.negative_pool=16", "base.train.epochs=1",
        "base.train.eval_every=1", "base.train.progress=false", "base.train.device=cpu"])
    config = spec.base_config()
    result = run_pipeline(config, load_dataset(config.dataset))
    for metric in spec.metric_keys():
        section, split, name = metric.split(".")
        assert 0.0 <= result.metrics[section][split][name] <= 1.0
