"""Vectorised clean-up of (user, item) pair arrays shared by the file loaders.

All functions take int [N, 2] arrays and keep the original row order of what they keep.
"""

from __future__ import annotations

import numpy as np


def _as_pairs(pairs: np.ndarray) -> np.ndarray:
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"expected an [N, 2] array of (user, item) pairs, got shape {pairs.shape}")
    return pairs.astype(np.int64, copy=False)


def pair_keys(pairs: np.ndarray, n_items: int | None = None) -> np.ndarray:
    """One int64 key per pair (``user * n_items + item``), equal exactly when the pairs are equal.

    ``n_items`` defaults to ``max item + 1``; pass a common bound to compare keys of different arrays.
    """
    pairs = _as_pairs(pairs)
    if len(pairs) == 0:
        return np.empty(0, dtype=np.int64)
    if n_items is None:
        n_items = int(pairs[:, 1].max()) + 1
    if pairs.min() < 0:
        raise ValueError("pair ids must be non-negative")
    if (int(pairs[:, 0].max()) + 1) * n_items >= np.iinfo(np.int64).max:
        raise ValueError("ids too large to encode pairs as int64 keys")
    return pairs[:, 0] * np.int64(n_items) + pairs[:, 1]


def sorted_isin(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """bool mask: ``values[i]`` occurs in ``reference`` (sort + binary search; faster than np.isin's hashing
    on millions of int64 keys)."""
    if len(reference) == 0:
        return np.zeros(len(values), dtype=bool)
    ordered = np.sort(reference)
    position = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return np.asarray(ordered[position] == values)


def unique_pair_index(pairs: np.ndarray) -> np.ndarray:
    """Sorted row indices of the first occurrence of every distinct pair."""
    keys = pair_keys(pairs)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return np.sort(order[first])


def dedupe_pairs(pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop repeated pairs, keeping each pair's first occurrence in order. Returns (pairs, n_duplicates)."""
    pairs = _as_pairs(pairs)
    keep = unique_pair_index(pairs)
    return pairs[keep], len(pairs) - len(keep)


def drop_users_absent_from_train(train: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop pairs whose user has no training positive (nothing to learn a cold user from).

    Returns (kept pairs, number of dropped pairs).
    """
    train, pairs = _as_pairs(train), _as_pairs(pairs)
    keep = sorted_isin(pairs[:, 0], train[:, 0])
    return pairs[keep], int((~keep).sum())


def drop_pairs_in(reference: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop pairs that also occur in ``reference`` (e.g. test positives already seen in training, which
    full ranking excludes and so could never be retrieved). Returns (kept pairs, number dropped)."""
    reference, pairs = _as_pairs(reference), _as_pairs(pairs)
    if len(reference) == 0 or len(pairs) == 0:
        return pairs, 0
    bound = int(max(reference[:, 1].max(), pairs[:, 1].max())) + 1
    keep = ~sorted_isin(pair_keys(pairs, bound), pair_keys(reference, bound))
    return pairs[keep], int((~keep).sum())


def clean_splits(train: np.ndarray, evaluation: dict[str, np.ndarray],
                 train_timestamps: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None, dict[str, int]]:
    """The loaders' common clean-up of stored splits.

    1. every split: repeated pairs removed (first occurrence kept; ``train_timestamps`` follow ``train``);
    2. evaluation splits: pairs of users without a training positive dropped;
    3. evaluation splits: pairs already positive in training dropped (full ranking excludes seen items, so
       they could never be retrieved and would only deflate recall).

    Returns (train, evaluation splits, train timestamps, counts) with counts ``duplicates_removed``,
    ``cold_user_pairs_dropped``, ``seen_in_train_dropped`` and per-split ``duplicates_<split>``.
    """
    train = _as_pairs(train)
    keep = unique_pair_index(train)
    counts = {"duplicates_train": len(train) - len(keep)}
    train = train[keep]
    if train_timestamps is not None:
        train_timestamps = np.asarray(train_timestamps)[keep]
    cold = seen = 0
    cleaned: dict[str, np.ndarray] = {}
    for split, pairs in evaluation.items():
        pairs, counts[f"duplicates_{split}"] = dedupe_pairs(pairs)
        pairs, n_cold = drop_users_absent_from_train(train, pairs)
        pairs, n_seen = drop_pairs_in(train, pairs)
        cleaned[split] = pairs
        cold, seen = cold + n_cold, seen + n_seen
    counts["duplicates_removed"] = sum(v for k, v in counts.items() if k.startswith("duplicates_"))
    counts["cold_user_pairs_dropped"] = cold
    counts["seen_in_train_dropped"] = seen
    return train, cleaned, train_timestamps, counts
