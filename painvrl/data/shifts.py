"""Split and shift builders: IID splits (per-user random, global temporal) and OOD shifts (later period,
popularity-flattened), pure numpy and seeded.

Every builder returns a small frozen result that unpacks like a tuple (``train, val, test = random_split(...)``)
and carries ``info``: its provenance (builder name, fractions, seed, counts) for ``InteractionData.info``.

Typical OOD pipeline (what ``painvrl.data.registry`` does)::

    shift = temporal_ood(pairs, timestamps, 0.2)          # or popularity_ood(pairs, n_items, 0.2, seed)
    iid = random_split(shift.in_period, n_users, seed)    # or temporal_split(shift.in_period, ts[shift.in_index])
    ood = split_ood(shift.ood, iid.train, seed)           # 50/50 ood_val / ood_test, unknown users dropped
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from painvrl.errors import PainvrlInputError

MIN_POSITIVES_TO_SPLIT = 3
"""random_split: users with fewer positives keep all of them in train (one each for val and test would leave
nothing to learn the user from)."""


@dataclass(frozen=True)
class IIDSplit:
    """train / val / test positives (int64 [N, 2]); unpacks as ``(train, val, test)``.

    ``*_index`` are the row indices into the builder's input (to carry timestamps along).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    test_index: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.train, self.val, self.test))


@dataclass(frozen=True)
class ShiftSplit:
    """Interactions kept for the IID splits and those moved to OOD; unpacks as ``(in_period, ood)``.

    ``in_index`` / ``ood_index`` are row indices into the builder's input (to carry timestamps along).
    """

    in_period: np.ndarray
    ood: np.ndarray
    in_index: np.ndarray
    ood_index: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.in_period, self.ood))


@dataclass(frozen=True)
class OODSplit:
    """ood_val / ood_test positives; unpacks as ``(ood_val, ood_test)``."""

    ood_val: np.ndarray
    ood_test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.ood_val, self.ood_test))


# ------------------------------------------------------------------------------------------------ checks


def _as_pairs(pairs: np.ndarray, name: str = "pairs") -> np.ndarray:
    array = np.asarray(pairs)
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.integer):
        raise PainvrlInputError(f"{name}: expected an integer [N, 2] array of (user, item), got shape "
                                f"{array.shape} dtype {array.dtype}")
    if len(array) and array.min() < 0:
        raise PainvrlInputError(f"{name}: ids must be non-negative")
    return array.astype(np.int64, copy=False)


def _as_timestamps(timestamps: np.ndarray, n: int) -> np.ndarray:
    ts = np.asarray(timestamps)
    if ts.shape != (n,):
        raise PainvrlInputError(f"timestamps: expected shape ({n},) (one per interaction), got {ts.shape}")
    if not np.issubdtype(ts.dtype, np.number):
        raise PainvrlInputError(f"timestamps: must be numeric, got dtype {ts.dtype}")
    if not np.isfinite(ts).all():
        raise PainvrlInputError("timestamps: contain NaN/inf")
    return ts


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(f <= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise PainvrlInputError(f"split fractions {list(fractions)}: need three positive numbers (train, val, "
                                "test) summing to 1")
    return values[0], values[1], values[2]


def _check_ood_fraction(ood_fraction: float) -> float:
    if not 0.0 < float(ood_fraction) < 1.0:
        raise PainvrlInputError(f"ood_fraction={ood_fraction}: must be in (0, 1)")
    return float(ood_fraction)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: perfectly even; -> 1: all mass on one entry)."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(values), values.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2.0 * np.sum(ranks * values) / (n * total)) - (n + 1) / n)


def known_user_mask(train: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """bool [len(pairs)]: True where the row's user has a training positive (else no ID embedding was
    learned for them and they cannot be ranked)."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=bool)
    known = np.zeros(int(max(pairs[:, 0].max(), train[:, 0].max() if len(train) else 0)) + 1, dtype=bool)
    known[train[:, 0]] = True
    return known[pairs[:, 0]]


def _drop_unknown_users(train: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, int]:
    keep = known_user_mask(train, pairs)
    return pairs[keep], int((~keep).sum())


# ------------------------------------------------------------------------------------------------ IID


def random_split(pairs: np.ndarray, n_users: int, seed: int,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> IIDSplit:
    """Per-user random split of positives into train / val / test.

    For a user with n >= 3 positives: n_val = max(1, round(n * f_val)), n_test = max(1, round(n * f_test)),
    the rest (at least one) goes to train. Users with fewer than 3 positives keep all of them in train (they
    are counted in ``info["users_train_only"]``). Deterministic given ``seed``; rows keep their (user, item).
    """
    pairs = _as_pairs(pairs)
    _, f_val, f_test = _check_fractions(fractions)
    if len(pairs) and pairs[:, 0].max() >= n_users:
        raise PainvrlInputError(f"pairs: user id {int(pairs[:, 0].max())} >= n_users={n_users}")
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(len(pairs))
    # grouped by user, random order within a user
    index = permutation[np.argsort(pairs[permutation, 0], kind="stable")]
    shuffled = pairs[index]
    users = shuffled[:, 0]
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(shuffled)) - starts[users]
    n = counts[users]
    splittable = n >= MIN_POSITIVES_TO_SPLIT
    n_val = np.maximum(1, np.floor(n * f_val + 0.5)).astype(np.int64)
    n_test = np.maximum(1, np.floor(n * f_test + 0.5)).astype(np.int64)
    # keep at least one training positive even for extreme fractions
    n_test = np.minimum(n_test, n - 2)
    n_val = np.minimum(n_val, n - 1 - n_test)
    is_val = splittable & (rank < n_val)
    is_test = splittable & (rank >= n_val) & (rank < n_val + n_test)
    is_train = ~(is_val | is_test)
    train, val, test = shuffled[is_train], shuffled[is_val], shuffled[is_test]
    info = {
        "split_builder": "random_per_user",
        "split_fractions": [float(f) for f in fractions],
        "split_seed": int(seed),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "users_train_only": int(((counts > 0) & (counts < MIN_POSITIVES_TO_SPLIT)).sum()),
    }
    return IIDSplit(train, val, test, info, index[is_train], index[is_val], index[is_test])


def temporal_split(pairs: np.ndarray, timestamps: np.ndarray,
                   fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> IIDSplit:
    """Global temporal split: the earliest ``f_train`` of interactions train, the next ``f_val`` val, the
    latest ``f_test`` test (cut by rank in timestamp order, ties broken by input order, so counts are exact).

    Val / test rows of users with no training positive are dropped and counted (``info["dropped_*"]``):
    a user first seen after the cut has no learned embedding to rank with.
    """
    pairs = _as_pairs(pairs)
    ts = _as_timestamps(timestamps, len(pairs))
    f_train, f_val, _ = _check_fractions(fractions)
    order = np.argsort(ts, kind="stable")
    n = len(pairs)
    cut_val = int(np.floor(n * f_train + 0.5))
    cut_test = int(np.floor(n * (f_train + f_val) + 0.5))
    train_index = order[:cut_val]
    train = pairs[train_index]
    val_index, test_index = order[cut_val:cut_test], order[cut_test:]
    keep_val, keep_test = known_user_mask(train, pairs[val_index]), known_user_mask(train, pairs[test_index])
    val_index, test_index = val_index[keep_val], test_index[keep_test]
    val, test = pairs[val_index], pairs[test_index]
    dropped_val, dropped_test = int((~keep_val).sum()), int((~keep_test).sum())
    info = {
        "split_builder": "temporal_global",
        "split_fractions": [float(f) for f in fractions],
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "dropped_val_unknown_user": dropped_val, "dropped_test_unknown_user": dropped_test,
    }
    if n:
        info["split_val_start_time"] = float(ts[order[min(cut_val, n - 1)]])
        info["split_test_start_time"] = float(ts[order[min(cut_test, n - 1)]])
    return IIDSplit(train, val, test, info, train_index, val_index, test_index)


# ------------------------------------------------------------------------------------------------ OOD


def temporal_ood(pairs: np.ndarray, timestamps: np.ndarray, ood_fraction: float = 0.2,
                 per_user: bool = False) -> ShiftSplit:
    """Later-period shift. Global (default): the latest ``ood_fraction`` of all interactions (by timestamp
    rank, ties by input order) form the OOD pool. ``per_user=True``: each user's latest
    round(n_u * ood_fraction) interactions (at most n_u - 1) form it instead, a drift of each user's own
    interests that keeps every user (on MovieLens most users are active in a short window, so a global cut
    leaves few OOD users that also have training data). Follow with :func:`split_ood`."""
    pairs = _as_pairs(pairs)
    ts = _as_timestamps(timestamps, len(pairs))
    fraction = _check_ood_fraction(ood_fraction)
    info: dict[str, Any] = {"ood_builder": "temporal_per_user" if per_user else "temporal",
                            "ood_fraction": fraction}
    if per_user:
        order = np.lexsort((np.arange(len(pairs)), ts, pairs[:, 0]))  # by user, then time, then input order
        users = pairs[order, 0]
        n_users = int(users.max()) + 1 if len(users) else 0
        counts = np.bincount(users, minlength=n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        rank = np.arange(len(order)) - starts[users]
        n = counts[users]
        n_ood = np.minimum(np.floor(n * fraction + 0.5), n - 1)
        is_ood = np.zeros(len(pairs), dtype=bool)
        is_ood[order[rank >= n - n_ood]] = True
        in_index, ood_index = np.flatnonzero(~is_ood), np.flatnonzero(is_ood)
    else:
        order = np.argsort(ts, kind="stable")
        cut = len(pairs) - int(np.floor(len(pairs) * fraction + 0.5))
        in_index, ood_index = np.sort(order[:cut]), np.sort(order[cut:])
        if len(ood_index):
            info["ood_start_time"] = float(ts[order[cut]])
    info.update({"n_in_period": len(in_index), "n_ood_pool": len(ood_index)})
    return ShiftSplit(pairs[in_index], pairs[ood_index], in_index, ood_index, info)


def popularity_ood(pairs: np.ndarray, n_items: int, ood_fraction: float = 0.2, seed: int = 0) -> ShiftSplit:
    """Popularity shift: sample ``ood_fraction`` of interactions without replacement, each with probability
    proportional to 1 / (its item's interaction count), so every item contributes about equally in
    expectation and the OOD pool's item-popularity distribution is flattened (a model that leans on
    popularity loses there). ``info`` reports the Gini of per-item counts (over items that occur in the input)
    before, in the OOD pool and in the remaining data."""
    pairs = _as_pairs(pairs)
    fraction = _check_ood_fraction(ood_fraction)
    if len(pairs) and pairs[:, 1].max() >= n_items:
        raise PainvrlInputError(f"pairs: item id {int(pairs[:, 1].max())} >= n_items={n_items}")
    counts = np.bincount(pairs[:, 1], minlength=n_items)
    n_ood = int(np.floor(len(pairs) * fraction + 0.5))
    rng = np.random.default_rng([seed, 1])  # a stream apart from random_split's
    if n_ood:
        weights = 1.0 / counts[pairs[:, 1]]
        ood_index = np.sort(rng.choice(len(pairs), size=n_ood, replace=False, p=weights / weights.sum()))
    else:
        ood_index = np.zeros(0, dtype=np.int64)
    is_ood = np.zeros(len(pairs), dtype=bool)
    is_ood[ood_index] = True
    in_index = np.flatnonzero(~is_ood)
    seen = counts > 0
    info = {
        "ood_builder": "popularity",
        "ood_fraction": fraction,
        "ood_seed": int(seed),
        "n_in_period": len(in_index), "n_ood_pool": len(ood_index),
        "gini_items_before": gini(counts[seen]),
        "gini_items_ood": gini(np.bincount(pairs[ood_index, 1], minlength=n_items)[seen]),
        "gini_items_remaining": gini(np.bincount(pairs[in_index, 1], minlength=n_items)[seen]),
    }
    return ShiftSplit(pairs[in_index], pairs[ood_index], in_index, ood_index.astype(np.int64), info)


def split_ood(ood_pairs: np.ndarray, train: np.ndarray, seed: int) -> OODSplit:
    """Split an OOD pool 50/50 at random (seeded) into ood_val / ood_test, then drop rows whose user has no
    training positive (counted). A random rather than chronological halving keeps OOD validation an unbiased
    proxy of OOD test. Items unseen in train are kept (features can still score them) and counted."""
    ood_pairs, train = _as_pairs(ood_pairs, "ood_pairs"), _as_pairs(train, "train")
    rng = np.random.default_rng([seed, 2])  # a stream apart from random_split's and popularity_ood's
    shuffled = ood_pairs[rng.permutation(len(ood_pairs))]
    half = len(shuffled) // 2
    ood_val, dropped_val = _drop_unknown_users(train, shuffled[:half])
    ood_test, dropped_test = _drop_unknown_users(train, shuffled[half:])
    train_items = np.unique(train[:, 1])
    info = {
        "n_ood_val": len(ood_val), "n_ood_test": len(ood_test),
        "ood_dropped_unknown_user": dropped_val + dropped_test,
        "ood_test_cold_items": int((~np.isin(ood_test[:, 1], train_items)).sum()),
    }
    return OODSplit(ood_val, ood_test, info)


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class SplitPlan:
    """Everything a loader needs from the builders: the five splits, train timestamps and provenance."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    ood_val: np.ndarray | None
    ood_test: np.ndarray | None
    train_timestamps: np.ndarray | None
    info: dict[str, Any]


def build_splits(pairs: np.ndarray, timestamps: np.ndarray | None, n_users: int, n_items: int, split: str,
                 ood: str, ood_fraction: float, seed: int,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1), temporal_per_user: bool = False) -> SplitPlan:
    """OOD shift first (``ood``: none | temporal | popularity; ``temporal_per_user`` selects the per-user
    form of :func:`temporal_ood`), then the IID split of what remains
    (``split``: random | temporal), then the OOD pool halved by :func:`split_ood`. ``info`` merges every
    builder's provenance."""
    pairs = _as_pairs(pairs)
    if timestamps is not None:
        timestamps = _as_timestamps(timestamps, len(pairs))
    needs_time = [name for name, value in (("dataset.split", split), ("dataset.ood", ood)) if value == "temporal"]
    if needs_time and timestamps is None:
        raise PainvrlInputError(f"config field '{needs_time[0]}': temporal needs interaction timestamps, which "
                                "this dataset does not provide")
    info: dict[str, Any] = {}
    if ood == "temporal":
        assert timestamps is not None
        shift: ShiftSplit | None = temporal_ood(pairs, timestamps, ood_fraction, temporal_per_user)
    elif ood == "popularity":
        shift = popularity_ood(pairs, n_items, ood_fraction, seed)
    elif ood == "none":
        shift = None
    else:
        raise PainvrlInputError(f"config field 'dataset.ood': {ood!r} is not a builder here (none, temporal, "
                                "popularity)")
    if shift is not None:
        info.update(shift.info)
        in_index = shift.in_index
    else:
        info["ood_builder"] = "none"
        in_index = np.arange(len(pairs))
    in_pairs = pairs[in_index]
    in_times = None if timestamps is None else timestamps[in_index]
    if split == "random":
        iid = random_split(in_pairs, n_users, seed, fractions)
    elif split == "temporal":
        assert in_times is not None
        iid = temporal_split(in_pairs, in_times, fractions)
    else:
        raise PainvrlInputError(f"config field 'dataset.split': {split!r} is not a builder here (random, "
                                "temporal)")
    info.update(iid.info)
    ood_val = ood_test = None
    if shift is not None:
        halves = split_ood(shift.ood, iid.train, seed)
        ood_val, ood_test = halves.ood_val, halves.ood_test
        info.update(halves.info)
    train_times = None if in_times is None or iid.train_index is None else in_times[iid.train_index]
    return SplitPlan(iid.train, iid.val, iid.test, ood_val, ood_test, train_times, info)
