from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from format_builders import object_rows, write_mmgcn

from painvrl.config import DatasetConfig
from painvrl.data.mmgcn import bag_of_words, load_mmgcn
from painvrl.errors import PainvrlInputError

CFG = DatasetConfig(name="mmgcn")


def _rows_to_pairs(rows: np.ndarray, offset: int) -> list[list[int]]:
    return [[int(row[0]), int(item) - offset] for row in rows for item in row[1:]]


def test_movielens_ids_offsets_and_features(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path / "movielens", "movielens", n_users=30, n_items=50, seed=2)
    data = load_mmgcn(folder, CFG)
    assert (data.n_users, data.n_items) == (30, 50)
    train = np.load(folder / "train.npy")
    assert data.train.tolist() == (train - [0, 30]).tolist()
    val_rows = np.load(folder / "val_full.npy", allow_pickle=True)  # our own trusted test file
    test_rows = np.load(folder / "test_full.npy", allow_pickle=True)
    assert data.val.tolist() == _rows_to_pairs(val_rows, 30)
    assert data.test.tolist() == _rows_to_pairs(test_rows, 30)
    assert data.modalities == ["visual", "acoustic", "textual"]
    np.testing.assert_array_equal(data.features["visual"], np.load(folder / "FeatureVideo_normal.npy"))
    assert data.ood_val is None and data.ood_test is None
    assert data.info["variant"] == "movielens" and data.info["split"] == "explicit"
    assert data.info["n_users_ambiguous"] is False
    assert data.info["user_item_dict_extra_pairs"] == 0
    assert "user_item_dict.npy" in data.info["files"]


@pytest.mark.parametrize("layout", ["k2", "2k"])
def test_tiktok_word_pairs_become_bag_of_words(tmp_path: Path, layout: Literal["k2", "2k"]) -> None:
    folder = write_mmgcn(tmp_path, "tiktok", n_users=20, n_items=30, vocab=12, words_layout=layout)
    data = load_mmgcn(folder, CFG)
    assert data.info["variant"] == "tiktok"
    text = data.features["textual"]
    assert text.shape == (30, 12) and data.info["textual_vocab"] == 12
    words = torch.load(folder / "feat_t.pt", weights_only=True).numpy()
    words = words if layout == "k2" else words.T
    expected = np.zeros((30, 12))
    np.add.at(expected, (words[:, 0], words[:, 1]), 1.0)
    totals = expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(text, np.divide(expected, totals, out=np.zeros_like(expected), where=totals > 0),
                               rtol=1e-6)
    present = data.feature_present["textual"]
    assert present[:-1].all() and not present[-1]  # the builder leaves the last item without words
    np.testing.assert_allclose(text[present].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(data.features["visual"], torch.load(folder / "feat_v.pt").numpy())


def test_tiktok_dense_text_and_no_user_item_dict(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, "tiktok", text_as_words=False, with_user_item_dict=False)
    data = load_mmgcn(folder, CFG)
    assert data.features["textual"].shape == (60, 8)
    assert "textual" not in data.feature_present
    assert "user_item_dict_extra_pairs" not in data.info


def test_bag_of_words_hashes_when_over_budget(tmp_path: Path) -> None:
    pairs = np.array([[0, 0], [0, 5], [1, 9], [2, 4], [2, 4]])
    matrix, present, info = bag_of_words(pairs, n_items=3, path=tmp_path / "feat_t.pt", max_bytes=3 * 4 * 4)
    assert info == {"textual_vocab": 10, "textual_columns": 4}
    # words fold modulo 4: 0->0, 5->1, 9->1, 4->0
    np.testing.assert_allclose(matrix, np.array([[0.5, 0.5, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]))
    assert present.all()
    with pytest.raises(PainvrlInputError, match=r"feat_t\.pt: \(item, word\) pairs name item 2 but there are "
                                                r"2 items"):
        bag_of_words(pairs, n_items=2, path=tmp_path / "feat_t.pt")


def test_modality_filter(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path)
    data = load_mmgcn(folder, DatasetConfig(name="mmgcn", modalities=["textual", "visual"]))
    assert data.modalities == ["textual", "visual"]
    with pytest.raises(PainvrlInputError, match=r"asks for \['image'\]"):
        load_mmgcn(folder, DatasetConfig(name="mmgcn", modalities=["image"]))


def test_explicit_ood_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match="MMGCN format has no OOD split"):
        load_mmgcn(write_mmgcn(tmp_path), DatasetConfig(name="mmgcn", ood="explicit"))


@pytest.mark.parametrize("name", ["train.npy", "val_full.npy", "test_full.npy"])
def test_missing_split_files(tmp_path: Path, name: str) -> None:
    folder = write_mmgcn(tmp_path)
    (folder / name).unlink()
    with pytest.raises(PainvrlInputError, match=re.escape(name) + ": required file not found"):
        load_mmgcn(folder, CFG)


def test_missing_features_and_both_variants(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path)
    for name in ("FeatureVideo_normal.npy", "FeatureAudio_avg_normal.npy", "FeatureText_stl_normal.npy"):
        (folder / name).unlink()
    with pytest.raises(PainvrlInputError, match=r"no item feature file \(expected some of FeatureVideo"):
        load_mmgcn(folder, CFG)
    np.save(folder / "FeatureVideo_normal.npy", np.ones((60, 3), dtype=np.float32))
    torch.save(torch.ones(60, 3), folder / "feat_v.pt")
    with pytest.raises(PainvrlInputError, match=r"both FeatureVideo_normal\.npy and feat_v\.pt exist"):
        load_mmgcn(folder, CFG)


def test_train_shape_and_dtype(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path)
    train = np.load(folder / "train.npy")
    np.save(folder / "train.npy", np.concatenate([train, train[:, :1]], axis=1))
    with pytest.raises(PainvrlInputError, match=r"train\.npy: must be an \[N, 2\] array .*shape \(\d+, 3\)"):
        load_mmgcn(folder, CFG)
    np.save(folder / "train.npy", train + 0.5)
    with pytest.raises(PainvrlInputError, match=r"train\.npy: train pairs must be integer ids, got dtype float64"):
        load_mmgcn(folder, CFG)
    np.save(folder / "train.npy", train.astype(np.float64))  # integral floats are accepted
    assert load_mmgcn(folder, CFG).train.dtype == np.int64
    bad = train.copy()
    bad[0, 0] = -3
    np.save(folder / "train.npy", bad)
    with pytest.raises(PainvrlInputError, match=r"train\.npy: train pairs has negative id -3"):
        load_mmgcn(folder, CFG)


def test_feature_shape_rows_and_nan(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path)
    video = np.load(folder / "FeatureVideo_normal.npy")
    np.save(folder / "FeatureVideo_normal.npy", video[:, 0])
    with pytest.raises(PainvrlInputError, match=r"FeatureVideo_normal\.npy: item features must be a 2-D"):
        load_mmgcn(folder, CFG)
    np.save(folder / "FeatureVideo_normal.npy", video[:-1])
    with pytest.raises(PainvrlInputError, match=r"disagree on the number of items.*FeatureVideo_normal\.npy"
                                                r"': 59"):
        load_mmgcn(folder, CFG)
    video[4, 2] = np.nan
    np.save(folder / "FeatureVideo_normal.npy", video)
    with pytest.raises(PainvrlInputError, match=r"FeatureVideo_normal\.npy: item features contain NaN/inf"):
        load_mmgcn(folder, CFG)


def test_fewer_feature_rows_than_items_is_an_error(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, n_users=40, n_items=60)
    for name in ("FeatureVideo_normal.npy", "FeatureAudio_avg_normal.npy", "FeatureText_stl_normal.npy"):
        np.save(folder / name, np.load(folder / name)[:50])
    # item ids reach 40 + 59 but 50 rows allow at most 40 + 49 after the smallest consistent offset
    with pytest.raises(PainvrlInputError, match=r"cannot separate users from offset item ids: item ids reach 99 "
                                                r"but with 50 feature rows"):
        load_mmgcn(folder, CFG)


def test_item_out_of_range_in_eval_rows(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, n_users=40, n_items=60)
    rows = list(np.load(folder / "test_full.npy", allow_pickle=True))
    rows[0] = [rows[0][0], 40 + 60]
    np.save(folder / "test_full.npy", object_rows(rows), allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"cannot separate users from offset item ids"):
        load_mmgcn(folder, CFG)


def test_users_overlapping_items(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, n_users=40, n_items=60)
    train = np.load(folder / "train.npy")
    train[0, 0] = 45
    np.save(folder / "train.npy", train)
    with pytest.raises(PainvrlInputError, match=r"user id 45 \(train\) is not below the smallest item id 40"):
        load_mmgcn(folder, CFG)


def test_ambiguous_offset_takes_smallest_consistent_value(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, n_users=40, n_items=60, with_user_item_dict=False)
    for name in ("val_full.npy", "test_full.npy"):
        rows = np.load(folder / name, allow_pickle=True)
        kept = [[r[0], *[i for i in r[1:] if i != 40]] for r in rows]
        np.save(folder / name, object_rows(kept), allow_pickle=True)
    train = np.load(folder / "train.npy")
    np.save(folder / "train.npy", train[train[:, 1] != 40])  # nobody uses item 0 any more
    data = load_mmgcn(folder, CFG)
    assert data.n_users == 40 and data.info["n_users_ambiguous"] is True


def test_ragged_rows_checks(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path)
    rows = list(np.load(folder / "val_full.npy", allow_pickle=True))
    np.save(folder / "val_full.npy", object_rows([*rows, []]), allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"val_full\.npy: row 40 is empty"):
        load_mmgcn(folder, CFG)
    bad = np.empty(2, dtype=object)
    bad[0], bad[1] = [0, 41], "user 1"
    np.save(folder / "val_full.npy", bad, allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"val_full\.npy: row 1 must be a flat list of integer ids"):
        load_mmgcn(folder, CFG)
    np.save(folder / "val_full.npy", object_rows([[u] for u in range(40)]), allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"val_full\.npy: rows hold users but no items"):
        load_mmgcn(folder, CFG)


def test_equal_length_rows_saved_as_plain_array(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path)
    rows = np.load(folder / "test_full.npy", allow_pickle=True)
    np.save(folder / "test_full.npy", np.array([list(r) for r in rows], dtype=np.int64))
    assert len(load_mmgcn(folder, CFG).test) == 40


class _MakesDirectory:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.target),)


def test_malicious_val_full_is_refused(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path / "d")
    marker = tmp_path / "pwned"
    rows = np.load(folder / "val_full.npy", allow_pickle=True)
    rows = object_rows([list(r) for r in rows])
    rows[-1] = _MakesDirectory(marker)
    np.save(folder / "val_full.npy", rows, allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"val_full\.npy: refused to unpickle"):
        load_mmgcn(folder, CFG)
    assert not marker.exists()


def test_user_item_dict_consistency(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path)
    mapping = np.load(folder / "user_item_dict.npy", allow_pickle=True).item()
    mapping[0] = set(list(mapping[0])[1:])
    np.save(folder / "user_item_dict.npy", np.array(mapping, dtype=object), allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"user_item_dict\.npy: does not match train\.npy: 1 training "
                                                r"pairs are missing"):
        load_mmgcn(folder, CFG)
    np.save(folder / "user_item_dict.npy", np.array([1, 2], dtype=object), allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"user_item_dict\.npy: expected np\.save of a dict"):
        load_mmgcn(folder, CFG)


def test_user_item_dict_extra_pairs_are_counted(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, n_users=40, n_items=60)
    mapping = np.load(folder / "user_item_dict.npy", allow_pickle=True).item()
    test_rows = np.load(folder / "test_full.npy", allow_pickle=True)
    mapping[int(test_rows[0][0])].add(int(test_rows[0][1]))
    np.save(folder / "user_item_dict.npy", np.array(mapping, dtype=object), allow_pickle=True)
    assert load_mmgcn(folder, CFG).info["user_item_dict_extra_pairs"] == 1


def test_duplicates_and_cold_users(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, n_users=40, n_items=60, with_user_item_dict=False)
    train = np.load(folder / "train.npy")
    user_10 = train[:, 0] == 10
    np.save(folder / "train.npy", np.concatenate([train[~user_10], train[:3]]))  # user 10 cold, 3 duplicates
    data = load_mmgcn(folder, CFG)
    assert data.info["duplicates_train"] == 3
    assert data.info["cold_user_pairs_dropped"] == int(
        sum(len(r) - 1 for name in ("val_full.npy", "test_full.npy")
            for r in np.load(folder / name, allow_pickle=True) if r[0] == 10))
    assert 10 not in data.val[:, 0] and 10 not in data.test[:, 0]
    assert len(data.train) == int((~user_10).sum())


def test_torch_features_in_half_precision_sparse_or_with_grad(tmp_path: Path) -> None:
    folder = write_mmgcn(tmp_path, "tiktok")
    visual = torch.load(folder / "feat_v.pt", weights_only=True)
    torch.save(visual.to(torch.bfloat16), folder / "feat_v.pt")
    torch.save(torch.load(folder / "feat_a.pt", weights_only=True).to_sparse(), folder / "feat_a.pt")
    data = load_mmgcn(folder, CFG)
    np.testing.assert_allclose(data.features["visual"], visual.numpy(), rtol=1e-2, atol=1e-2)
    assert data.features["acoustic"].shape == (60, 6)
    torch.save(visual.requires_grad_(), folder / "feat_v.pt")
    np.testing.assert_array_equal(load_mmgcn(folder, CFG).features["visual"], visual.detach().numpy())
