from __future__ import annotations

import numpy as np
import pytest

from painvrl.data.cleaning import (
    clean_splits,
    dedupe_pairs,
    drop_pairs_in,
    drop_users_absent_from_train,
    pair_keys,
    sorted_isin,
    unique_pair_index,
)


def test_dedupe_keeps_first_occurrences_in_order() -> None:
    pairs = np.array([[2, 5], [0, 1], [2, 5], [0, 1], [1, 1], [2, 5]])
    kept, n_duplicates = dedupe_pairs(pairs)
    assert kept.tolist() == [[2, 5], [0, 1], [1, 1]]
    assert n_duplicates == 3
    assert kept.dtype == np.int64
    assert unique_pair_index(pairs).tolist() == [0, 1, 4]


def test_dedupe_distinguishes_swapped_and_empty() -> None:
    kept, n = dedupe_pairs(np.array([[1, 2], [2, 1]]))
    assert n == 0 and len(kept) == 2
    kept, n = dedupe_pairs(np.empty((0, 2), dtype=np.int64))
    assert n == 0 and kept.shape == (0, 2)


def test_drop_users_absent_from_train() -> None:
    train = np.array([[0, 1], [2, 3]])
    pairs = np.array([[0, 4], [1, 4], [2, 0], [1, 2]])
    kept, n_dropped = drop_users_absent_from_train(train, pairs)
    assert kept.tolist() == [[0, 4], [2, 0]]
    assert n_dropped == 2


def test_drop_pairs_in_reference() -> None:
    train = np.array([[0, 1], [2, 3]])
    kept, n = drop_pairs_in(train, np.array([[0, 1], [0, 3], [2, 3], [2, 1]]))
    assert kept.tolist() == [[0, 3], [2, 1]] and n == 2


def test_pair_keys_reject_bad_shapes_and_negatives() -> None:
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        pair_keys(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        pair_keys(np.array([[0, -1]]))


def test_clean_splits_counts_and_timestamps_follow_train() -> None:
    train = np.array([[0, 1], [0, 2], [0, 1], [1, 3]])
    timestamps = np.array([10, 20, 30, 40])
    evaluation = {"val": np.array([[0, 4], [0, 4], [5, 1]]), "test": np.array([[1, 3], [1, 0]])}
    train_out, evaluation_out, ts_out, counts = clean_splits(train, evaluation, timestamps)
    assert train_out.tolist() == [[0, 1], [0, 2], [1, 3]]
    assert ts_out is not None and ts_out.tolist() == [10, 20, 40]
    assert evaluation_out["val"].tolist() == [[0, 4]]
    assert evaluation_out["test"].tolist() == [[1, 0]]
    assert counts == {"duplicates_train": 1, "duplicates_val": 1, "duplicates_test": 0,
                      "duplicates_removed": 2, "cold_user_pairs_dropped": 1, "seen_in_train_dropped": 1}


def test_sorted_isin_and_unique_match_numpy() -> None:
    rng = np.random.default_rng(0)
    values, reference = rng.integers(0, 500, 2000), rng.integers(0, 500, 300)
    np.testing.assert_array_equal(sorted_isin(values, reference), np.isin(values, reference))
    assert not sorted_isin(values, reference[:0]).any()
    pairs = rng.integers(0, 12, size=(400, 2))
    _, first = np.unique(pairs, axis=0, return_index=True)
    np.testing.assert_array_equal(unique_pair_index(pairs), np.sort(first))
