"""Split and shift builders: partitions, per-user fractions, temporal order, popularity flattening."""

from __future__ import annotations

import numpy as np
import pytest

from painvrl.data.shifts import (
    build_splits,
    gini,
    popularity_ood,
    random_split,
    split_ood,
    temporal_ood,
    temporal_split,
)
from painvrl.errors import PainvrlInputError


def _keys(pairs: np.ndarray) -> list[tuple[int, int]]:
    return sorted(map(tuple, np.asarray(pairs).tolist()))


def _interactions(n_users: int = 40, n_items: int = 200, per_user: int = 20, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs with a Zipf-like item popularity, and random timestamps."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1)
    rows: list[tuple[int, int]] = []
    for user in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False, p=weights / weights.sum())
        rows.extend((user, int(i)) for i in items)
    pairs = np.array(rows, dtype=np.int64)
    return pairs, rng.integers(0, 10_000, size=len(pairs))


def test_gini_known_values() -> None:
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 1])) == pytest.approx(0.75)
    assert gini(np.array([])) == 0.0


def test_random_split_partitions_per_user() -> None:
    pairs = np.array([(0, i) for i in range(10)] + [(1, i) for i in range(2)] + [(2, i) for i in range(3)])
    split = random_split(pairs, n_users=3, seed=1)
    train, val, test = split
    assert _keys(np.concatenate([train, val, test])) == _keys(pairs)
    assert (np.bincount(train[:, 0], minlength=3) == [8, 2, 1]).all()
    assert (np.bincount(val[:, 0], minlength=3) == [1, 0, 1]).all()
    assert (np.bincount(test[:, 0], minlength=3) == [1, 0, 1]).all()
    assert split.info["users_train_only"] == 1  # user 1 has 2 positives: all stay in train
    assert split.info["split_builder"] == "random_per_user"
    assert split.train_index is not None and split.test_index is not None
    assert np.array_equal(pairs[split.train_index], train)
    assert np.array_equal(pairs[split.test_index], test)


def test_random_split_is_seeded() -> None:
    pairs, _ = _interactions()
    a, b, c = random_split(pairs, 40, seed=3), random_split(pairs, 40, seed=3), random_split(pairs, 40, seed=4)
    assert np.array_equal(a.test, b.test)
    assert not np.array_equal(np.sort(a.test, axis=0), np.sort(c.test, axis=0))


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.5, 0.5, 0.5), (1.0, 0.0, 0.0)])
def test_bad_fractions_are_input_errors(fractions: tuple[float, ...]) -> None:
    with pytest.raises(PainvrlInputError, match="fractions"):
        random_split(np.zeros((3, 2), dtype=np.int64), 1, 0, fractions)


def test_temporal_split_orders_by_time_and_drops_unknown_users() -> None:
    pairs = np.array([(0, 0), (0, 1), (1, 2), (0, 3), (1, 4), (2, 5), (0, 6), (1, 7), (2, 8), (3, 9)])
    timestamps = np.arange(10)[::-1].copy()  # reversed: the last row is the earliest
    split = temporal_split(pairs, timestamps, (0.6, 0.2, 0.2))
    times = {tuple(p): t for p, t in zip(pairs.tolist(), timestamps, strict=True)}
    assert max(times[tuple(p)] for p in split.train.tolist()) < min(times[tuple(p)] for p in split.val.tolist())
    assert max(times[tuple(p)] for p in split.val.tolist()) < min(times[tuple(p)] for p in split.test.tolist())
    assert len(split.train) == 6
    # the two latest rows (0, 0) and (0, 1) are test; user 0 has training rows so nothing is dropped there
    assert _keys(split.test) == [(0, 0), (0, 1)]
    dropped = split.info["dropped_val_unknown_user"] + split.info["dropped_test_unknown_user"]
    assert len(split.val) + len(split.test) + dropped == 4
    assert np.array_equal(pairs[split.train_index], split.train)


def test_temporal_split_counts_dropped_unknown_users() -> None:
    pairs = np.array([(0, 0), (0, 1), (0, 2), (0, 3), (1, 4)])
    split = temporal_split(pairs, np.arange(5), (0.6, 0.2, 0.2))
    assert split.info["dropped_test_unknown_user"] == 1  # user 1 only appears after the cut
    assert len(split.test) == 0


def test_temporal_ood_takes_the_latest_fraction() -> None:
    pairs, timestamps = _interactions()
    shift = temporal_ood(pairs, timestamps, 0.25)
    assert len(shift.ood) == round(0.25 * len(pairs))
    assert timestamps[shift.ood_index].min() >= timestamps[shift.in_index].max()
    assert _keys(np.concatenate(list(shift))) == _keys(pairs)
    assert shift.info["ood_builder"] == "temporal"


def test_temporal_ood_per_user_keeps_every_user() -> None:
    pairs, timestamps = _interactions()
    shift = temporal_ood(pairs, timestamps, 0.25, per_user=True)
    for user in range(40):
        own_in = timestamps[shift.in_index][shift.in_period[:, 0] == user]
        own_ood = timestamps[shift.ood_index][shift.ood[:, 0] == user]
        assert len(own_ood) == 5 and own_ood.min() >= own_in.max()


def test_popularity_ood_flattens_item_popularity() -> None:
    pairs, _ = _interactions(n_users=200, per_user=30)
    shift = popularity_ood(pairs, n_items=200, ood_fraction=0.2, seed=0)
    assert len(shift.ood) == round(0.2 * len(pairs))
    assert _keys(np.concatenate(list(shift))) == _keys(pairs)
    info = shift.info
    assert info["gini_items_ood"] < info["gini_items_before"] - 0.2
    # a uniform sample of the same size keeps the skew: the flattening is the builder's doing
    rng = np.random.default_rng(0)
    uniform = pairs[rng.choice(len(pairs), size=len(shift.ood), replace=False)]
    seen = np.bincount(pairs[:, 1], minlength=200) > 0
    assert info["gini_items_ood"] < gini(np.bincount(uniform[:, 1], minlength=200)[seen]) - 0.2
    again = popularity_ood(pairs, n_items=200, ood_fraction=0.2, seed=0)
    assert np.array_equal(again.ood_index, shift.ood_index)


def test_split_ood_halves_and_drops_unknown_users() -> None:
    train = np.array([(0, 0), (1, 1)])
    ood = np.array([(0, 2), (0, 3), (1, 4), (1, 5), (2, 6), (2, 7)])
    halves = split_ood(ood, train, seed=0)
    ood_val, ood_test = halves
    assert halves.info["ood_dropped_unknown_user"] == 2
    assert _keys(np.concatenate([ood_val, ood_test])) == _keys(ood[:4])


def test_build_splits_composes_builders() -> None:
    pairs, timestamps = _interactions()
    plan = build_splits(pairs, timestamps, n_users=40, n_items=200, split="random", ood="temporal",
                        ood_fraction=0.2, seed=0)
    assert plan.ood_val is not None and plan.ood_test is not None
    everything = np.concatenate([plan.train, plan.val, plan.test, plan.ood_val, plan.ood_test])
    assert len(_keys(everything)) == len(set(_keys(everything)))
    assert len(everything) + plan.info["ood_dropped_unknown_user"] == len(pairs)
    assert plan.train_timestamps is not None
    lookup = {tuple(p): t for p, t in zip(pairs.tolist(), timestamps, strict=True)}
    assert [lookup[tuple(p)] for p in plan.train.tolist()] == plan.train_timestamps.tolist()
    assert plan.info["ood_builder"] == "temporal" and plan.info["split_builder"] == "random_per_user"
    none = build_splits(pairs, None, 40, 200, "random", "none", 0.2, 0)
    assert none.ood_test is None and len(none.train) + len(none.val) + len(none.test) == len(pairs)


def test_temporal_without_timestamps_names_the_field() -> None:
    pairs, _ = _interactions()
    with pytest.raises(PainvrlInputError, match=r"dataset\.ood"):
        build_splits(pairs, None, 40, 200, "random", "temporal", 0.2, 0)
    with pytest.raises(PainvrlInputError, match=r"dataset\.split"):
        build_splits(pairs, None, 40, 200, "temporal", "none", 0.2, 0)
