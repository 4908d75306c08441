from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from format_builders import write_mmrec

from painvrl.config import DatasetConfig
from painvrl.data.mmrec import load_mmrec
from painvrl.errors import PainvrlInputError

CFG = DatasetConfig(name="mmrec")


def _frame(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "toy.inter", sep="\t")


def _write_frame(folder: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / "toy.inter", sep="\t", index=False)


def _split(frame: pd.DataFrame, label: int) -> list[list[int]]:
    return frame.loc[frame["x_label"] == label, ["userID", "itemID"]].to_numpy().tolist()


def test_load_matches_the_file(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path / "d", n_users=30, n_items=50, seed=3)
    data = load_mmrec(folder, CFG)
    frame = _frame(folder)
    assert data.name == "toy"
    assert (data.n_users, data.n_items) == (30, 50)
    assert data.train.tolist() == _split(frame, 0)
    assert data.val.tolist() == _split(frame, 1)
    assert data.test.tolist() == _split(frame, 2)
    assert data.ood_val is not None and data.ood_val.tolist() == _split(frame, 3)
    assert data.ood_test is not None and data.ood_test.tolist() == _split(frame, 4)
    assert data.info["ood"] == "explicit" and data.info["split"] == "explicit"
    assert data.modalities == ["image", "text"]
    np.testing.assert_array_equal(data.features["image"], np.load(folder / "image_feat.npy"))
    assert data.train_timestamps is not None
    assert data.train_timestamps.tolist() == frame.loc[frame["x_label"] == 0, "timestamp"].tolist()
    assert data.info["duplicates_removed"] == 0 and data.info["cold_user_pairs_dropped"] == 0


def test_without_ood_rows(tmp_path: Path) -> None:
    data = load_mmrec(write_mmrec(tmp_path, with_ood=False), CFG)
    assert data.ood_val is None and data.ood_test is None and "ood" not in data.info
    assert not data.has_ood()
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: dataset\.ood is 'explicit' but there are no OOD"):
        load_mmrec(tmp_path, DatasetConfig(name="mmrec", ood="explicit"))


def test_ood_validation_rows_without_ood_test_rows_are_an_error(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path)
    frame = _frame(folder)
    _write_frame(folder, frame[frame["x_label"] != 4])
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: has OOD validation rows \(x_label 3\) but no OOD"):
        load_mmrec(folder, CFG)


def _ood_test_only(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A random-exposure layout: every user's OOD rows are x_label 4 (two per user), none is 3."""
    folder = write_mmrec(tmp_path)
    frame = _frame(folder)
    frame.loc[frame["x_label"] == 3, "x_label"] = 4
    _write_frame(folder, frame)
    return folder, frame


def test_ood_test_rows_only_run_without_ood_validation(tmp_path: Path) -> None:
    folder, frame = _ood_test_only(tmp_path)
    data = load_mmrec(folder, CFG)
    assert data.has_ood() and not data.has_ood_validation()
    assert data.ood_val is not None and len(data.ood_val) == 0
    assert data.ood_test is not None and sorted(data.ood_test.tolist()) == sorted(_split(frame, 4))


def test_ood_val_fraction_carves_ood_validation_per_user(tmp_path: Path) -> None:
    folder, frame = _ood_test_only(tmp_path)
    config = DatasetConfig(name="mmrec", ood_val_fraction=0.5, seed=4)
    data = load_mmrec(folder, config)
    assert data.ood_val is not None and data.ood_test is not None and data.has_ood_validation()
    assert np.bincount(data.ood_val[:, 0], minlength=40).tolist() == [1] * 40  # floor(0.5 * 2) per user
    assert np.bincount(data.ood_test[:, 0], minlength=40).tolist() == [1] * 40
    both = np.concatenate([data.ood_val, data.ood_test]).tolist()
    assert sorted(both) == sorted(_split(frame, 4))
    again = load_mmrec(folder, config)
    assert again.ood_val is not None and again.ood_val.tolist() == data.ood_val.tolist()  # seeded
    other = load_mmrec(folder, DatasetConfig(name="mmrec", ood_val_fraction=0.5, seed=5))
    assert other.ood_val is not None and other.ood_val.tolist() != data.ood_val.tolist()


def test_ood_val_fraction_is_refused_when_the_file_has_ood_validation(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match=r"'dataset\.ood_val_fraction'"):
        load_mmrec(write_mmrec(tmp_path), DatasetConfig(name="mmrec", ood_val_fraction=0.3))


def test_selection_on_ood_needs_ood_validation(tmp_path: Path) -> None:
    from painvrl.config import load_config
    from painvrl.evaluation.evaluator import selection_key

    folder, _ = _ood_test_only(tmp_path)
    config = load_config(None, ["dataset.name=mmrec", f"dataset.path={folder}", "eval.selection_source=ood",
                                "dataset.ood=explicit"])
    with pytest.raises(PainvrlInputError, match=r"'eval\.selection_source'.*dataset\.ood_val_fraction"):
        selection_key(config, load_mmrec(folder, config.dataset))


def test_modality_filter(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path)
    data = load_mmrec(folder, DatasetConfig(name="mmrec", modalities=["text"]))
    assert data.modalities == ["text"]
    with pytest.raises(PainvrlInputError, match=r"asks for \['audio'\], but only \['image', 'text'\]"):
        load_mmrec(folder, DatasetConfig(name="mmrec", modalities=["audio"]))


def test_more_feature_rows_than_ids_is_allowed(tmp_path: Path) -> None:
    data = load_mmrec(write_mmrec(tmp_path, n_items=40, extra_feature_rows=5), CFG)
    assert data.n_items == 45
    assert data.train[:, 1].max() == 39


def test_fewer_feature_rows_than_ids_is_an_error(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path, n_items=40)
    for name in ("image", "text"):
        np.save(folder / f"{name}_feat.npy", np.load(folder / f"{name}_feat.npy")[:39])
    with pytest.raises(PainvrlInputError, match=r"image_feat\.npy: has 39 rows but toy\.inter uses item ids up "
                                                r"to 39"):
        load_mmrec(folder, CFG)


def test_feature_files_disagree_on_rows(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path, n_items=40)
    np.save(folder / "text_feat.npy", np.ones((41, 3), dtype=np.float32))
    with pytest.raises(PainvrlInputError, match=r"feature files disagree on the number of items.*"
                                                r"'image_feat\.npy': 40.*'text_feat\.npy': 41"):
        load_mmrec(folder, CFG)


def test_nan_feature_names_the_file(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path)
    features = np.load(folder / "text_feat.npy")
    features[7, 0] = np.inf
    np.save(folder / "text_feat.npy", features)
    with pytest.raises(PainvrlInputError, match=r"text_feat\.npy: item features contain NaN/inf in 1 rows "
                                                r"\(first: row 7\)"):
        load_mmrec(folder, CFG)


def test_feature_not_2d(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path)
    np.save(folder / "image_feat.npy", np.ones(60, dtype=np.float32))
    with pytest.raises(PainvrlInputError, match=r"image_feat\.npy: item features must be a 2-D"):
        load_mmrec(folder, CFG)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match="dataset folder not found"):
        load_mmrec(tmp_path / "absent", CFG)
    folder = write_mmrec(tmp_path / "a")
    (folder / "toy.inter").rename(folder / "toy.tsv")
    with pytest.raises(PainvrlInputError, match=r"no \*\.inter interaction file"):
        load_mmrec(folder, CFG)
    folder = write_mmrec(tmp_path / "b")
    for feature in folder.glob("*_feat.npy"):
        feature.unlink()
    with pytest.raises(PainvrlInputError, match=r"/b: no item feature file"):
        load_mmrec(folder, CFG)
    folder = write_mmrec(tmp_path / "c")
    (folder / "other.inter").write_text((folder / "toy.inter").read_text())
    with pytest.raises(PainvrlInputError, match=r"several \*\.inter files \(other\.inter, toy\.inter\)"):
        load_mmrec(folder, CFG)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("userID", "alice", r"column 'userID' has a non-numeric value 'alice' at line 5"),
    ("itemID", "", r"column 'itemID' has a missing value at line 5"),
    ("itemID", "2.5", r"column 'itemID' must hold integers, got 2\.5 at line 5"),
    ("userID", "-1", r"column 'userID' has negative id -1 at line 5"),
    ("x_label", "7", r"column 'x_label' must be 0 train, 1 valid, 2 test, 3 OOD valid or 4 OOD test; got 7 at "
                     r"line 5"),
    ("timestamp", "yesterday", r"column 'timestamp' has a non-numeric value 'yesterday' at line 5"),
])
def test_bad_cells_name_file_column_and_line(tmp_path: Path, column: str, value: str, message: str) -> None:
    folder = write_mmrec(tmp_path)
    frame = _frame(folder).astype(str)
    frame.loc[3, column] = value
    _write_frame(folder, frame)
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: " + message):
        load_mmrec(folder, CFG)


def test_missing_column_and_wrong_separator(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path)
    frame = _frame(folder)
    _write_frame(folder, frame.drop(columns=["x_label"]))
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: missing required column\(s\) \['x_label'\]"):
        load_mmrec(folder, CFG)
    frame.to_csv(folder / "toy.inter", index=False)
    with pytest.raises(PainvrlInputError, match=r"must be tab-separated"):
        load_mmrec(folder, CFG)


def test_optional_columns(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path)
    _write_frame(folder, _frame(folder)[["userID", "itemID", "x_label"]])
    data = load_mmrec(folder, CFG)
    assert data.train_timestamps is None


def test_empty_file_and_empty_split(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path)
    frame = _frame(folder)
    _write_frame(folder, frame[frame["x_label"] != 2])
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: no rows with x_label 2 \(test split is empty\)"):
        load_mmrec(folder, CFG)
    _write_frame(folder, frame.iloc[:0])
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: has a header but no interactions"):
        load_mmrec(folder, CFG)
    (folder / "toy.inter").write_text("")
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: file is empty"):
        load_mmrec(folder, CFG)


def test_duplicates_cold_users_and_seen_pairs_are_counted(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path, n_users=20, n_items=40, with_ood=False)
    frame = _frame(folder)
    train = frame[frame["x_label"] == 0]
    first_train = train.iloc[0]
    extra = pd.DataFrame([
        train.iloc[0].to_dict(), train.iloc[1].to_dict(),       # 2 training duplicates
        {**first_train.to_dict(), "x_label": 2},                # a test pair already in training
        {"userID": 20, "itemID": 3, "rating": 5, "timestamp": 1, "x_label": 1},   # cold user (val)
        {"userID": 21, "itemID": 4, "rating": 5, "timestamp": 1, "x_label": 2},   # cold user (test)
    ])
    _write_frame(folder, pd.concat([frame, extra], ignore_index=True))
    data = load_mmrec(folder, CFG)
    assert data.info["duplicates_train"] == 2 and data.info["duplicates_removed"] == 2
    assert data.info["cold_user_pairs_dropped"] == 2
    assert data.info["seen_in_train_dropped"] == 1
    assert data.n_users == 22  # ids stay as in the file; the cold users simply have no positives
    assert len(data.train) == len(train)
    assert data.train_timestamps is not None and len(data.train_timestamps) == len(data.train)
    assert 20 not in data.val[:, 0] and 21 not in data.test[:, 0]


def test_split_empty_after_cleaning(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path, with_ood=False)
    frame = _frame(folder)
    frame.loc[frame["x_label"] == 1, "userID"] = 999  # every val row belongs to a user without training rows
    _write_frame(folder, frame)
    with pytest.raises(PainvrlInputError, match=r"toy\.inter: the val split is empty after dropping"):
        load_mmrec(folder, CFG)


TIKTOK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tiktok"


@pytest.mark.skipif(not TIKTOK.is_dir(), reason=f"{TIKTOK} is absent")
def test_real_tiktok_loads_with_its_published_split() -> None:
    data = load_mmrec(TIKTOK, CFG)
    assert (data.n_users, data.n_items) == (9308, 6710)
    # 10 evaluation pairs (5 valid, 5 test) belong to users without training rows and are dropped
    assert (len(data.train), len(data.val), len(data.test)) == (59541, 3046, 6125)
    assert data.info["cold_user_pairs_dropped"] == 10 and data.info["duplicates_removed"] == 0
    assert data.modalities == ["audio", "image"] and data.feature_dim == 256
    assert not data.has_ood()
    from painvrl.data.registry import load_dataset

    shifted = load_dataset(DatasetConfig(name="mmrec", path=str(TIKTOK), ood="popularity"))
    assert shifted.has_ood_validation() and shifted.info["ood_source"] == "registry:popularity"
