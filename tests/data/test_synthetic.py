"""Tests of the synthetic spurious-correlation benchmark (painvrl/data/synthetic.py)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

import painvrl.data.synthetic as synthetic
from painvrl.config import DatasetConfig, SyntheticConfig
from painvrl.data.dataset import InteractionData
from painvrl.data.synthetic import make_synthetic, make_synthetic_with_latents
from painvrl.errors import PainvrlInputError

# warm IID (iid_new_items=0); the cold-start IID tests below set it
SMALL = DatasetConfig(seed=3, synthetic=SyntheticConfig(n_users=120, n_items=300, interactions_per_user=30,
                                                        iid_new_items=0.0))


def _cfg(seed: int | None = None, **changes: Any) -> DatasetConfig:
    """SMALL with ``changes`` to its synthetic section (and another data seed)."""
    return dataclasses.replace(SMALL, seed=SMALL.seed if seed is None else seed,
                               synthetic=dataclasses.replace(SMALL.synthetic, **changes))


def _ground_truth(data: InteractionData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    gt = data.ground_truth
    assert gt is not None
    assert gt.invariant_dims is not None and gt.train_env is not None
    assert gt.val_env is not None and gt.test_env is not None
    return gt.invariant_dims, gt.train_env, gt.val_env, gt.test_env


def test_default_config_is_fast_and_labelled_as_synthetic_ood() -> None:
    data = make_synthetic(DatasetConfig())
    assert data.name == "synthetic"
    assert data.info["ood"] == "synthetic"
    assert data.has_ood()
    assert data.info["train_env_strengths"] == [1.1, -1.0]
    assert data.info["ood_env_strength"] == -1.0
    assert data.info["positives_per_env"] == [15, 5, 10]
    # the default is cold-start IID: the IID splits are ranked among the 15% held-out items
    assert data.info["iid_new_items"] == 120
    assert data.iid_candidates is not None and data.iid_candidates.size == 120


def test_deterministic_in_seed() -> None:
    a, b = make_synthetic(SMALL), make_synthetic(SMALL)
    assert a.fingerprint() == b.fingerprint()
    for left, right in zip(_ground_truth(a), _ground_truth(b), strict=True):
        np.testing.assert_array_equal(left, right)
    c = make_synthetic(_cfg(seed=4))
    assert c.fingerprint() != a.fingerprint()


def test_sampling_in_user_chunks_does_not_change_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = make_synthetic(SMALL).fingerprint()
    monkeypatch.setattr(synthetic, "CHUNK_ELEMENTS", SMALL.synthetic.n_items * 7)  # 7 users per chunk
    assert make_synthetic(SMALL).fingerprint() == reference


def test_shapes_counts_and_environment_labels() -> None:
    cfg = _cfg(modality_dims=[10, 6, 8], train_env_strengths=[2.0, 1.0, 0.5], train_env_shares=[],
               interactions_per_user=40)
    data = make_synthetic(cfg)
    invariant, train_env, val_env, test_env = _ground_truth(data)
    assert list(data.features) == ["m0", "m1", "m2"]
    assert [m.shape for m in data.features.values()] == [(300, 10), (300, 6), (300, 8)]
    assert invariant.dtype == np.bool_ and invariant.shape == (data.feature_dim,)
    assert int(invariant.sum()) == sum(data.info["invariant_columns_per_block"])
    for block in data.modality_slices().values():  # every block has both kinds of dims
        assert 0 < invariant[block].sum() < block.stop - block.start
    per_env = data.info["positives_per_env"]
    assert sum(per_env) == cfg.synthetic.interactions_per_user and len(per_env) == 4
    n_train, n_val, n_test = data.info["user_split"]
    assert (len(data.train), len(data.val), len(data.test)) == (120 * n_train, 120 * n_val, 120 * n_test)
    assert data.ood_val is not None and data.ood_test is not None
    assert len(data.ood_val) + len(data.ood_test) == 120 * per_env[-1]
    assert len(train_env) == len(data.train) and len(val_env) == len(data.val) and len(test_env) == len(data.test)
    # Environment labels: every training environment appears in proportion to its share of positives.
    counts = np.bincount(np.concatenate([train_env, val_env, test_env]), minlength=3)
    np.testing.assert_array_equal(counts, 120 * np.array(per_env[:-1]))
    assert data.info["ood_env"] == 3


def test_splits_are_disjoint_and_every_user_is_in_every_split() -> None:
    data = make_synthetic(SMALL)
    assert data.ood_val is not None and data.ood_test is not None
    splits = [data.train, data.val, data.test, data.ood_val, data.ood_test]
    everything = np.concatenate(splits)
    assert len(np.unique(everything, axis=0)) == len(everything)
    for pairs in splits:
        assert np.array_equal(np.unique(pairs[:, 0]), np.arange(SMALL.synthetic.n_users))
    assert everything[:, 1].max() < SMALL.synthetic.n_items


def test_invariant_dims_are_driven_only_by_invariant_factors() -> None:
    data, latents = make_synthetic_with_latents(_cfg(feature_noise=0.05))
    invariant, *_ = _ground_truth(data)
    raw = np.concatenate(list(data.features.values()), axis=1).astype(np.float64)

    def r_squared(z: np.ndarray) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(z, raw, rcond=None)
        residual = raw - z @ coef
        return 1.0 - residual.var(axis=0) / raw.var(axis=0)

    r2_inv, r2_sp = r_squared(latents.item_invariant), r_squared(latents.item_spurious)
    assert r2_inv[invariant].min() > 0.95 and r2_sp[invariant].max() < 0.1
    assert r2_sp[~invariant].min() > 0.95 and r2_inv[~invariant].max() < 0.1


def _user_mean(features: np.ndarray, pairs: np.ndarray, n_users: int) -> np.ndarray:
    sums = np.zeros((n_users, features.shape[1]))
    np.add.at(sums, pairs[:, 0], features[pairs[:, 1]])
    return sums / np.bincount(pairs[:, 0], minlength=n_users)[:, None]


def test_ood_spurious_correlation_flips_sign_measured_in_features() -> None:
    """Per user, the spurious feature profile of OOD positives points AWAY from the profile of training
    positives, while IID test positives point the same way; invariant dims agree in both."""
    data = make_synthetic(DatasetConfig(seed=1))
    invariant, *_ = _ground_truth(data)
    assert data.ood_test is not None and data.ood_val is not None
    features = data.feature_matrix().astype(np.float64)
    features -= features.mean(axis=0)
    n = data.n_users
    train = _user_mean(features, data.train, n)
    iid = _user_mean(features, np.concatenate([data.val, data.test]), n)
    ood = _user_mean(features, np.concatenate([data.ood_val, data.ood_test]), n)

    def agreement(a: np.ndarray, b: np.ndarray, dims: np.ndarray) -> float:
        return float((a[:, dims] * b[:, dims]).sum(axis=1).mean())

    assert agreement(train, iid, ~invariant) > 0
    assert agreement(train, ood, ~invariant) < 0
    assert agreement(train, ood, invariant) > 0
    assert agreement(train, iid, invariant) > 0


def test_spurious_utility_of_positives_follows_environment_strengths() -> None:
    data, latents = make_synthetic_with_latents(SMALL)
    _, train_env, _, _ = _ground_truth(data)
    assert data.ood_test is not None
    spurious = latents.spurious_utility(data.train[:, 0], data.train[:, 1])
    env0, env1 = spurious[train_env == 0].mean(), spurious[train_env == 1].mean()
    ood = latents.spurious_utility(data.ood_test[:, 0], data.ood_test[:, 1]).mean()
    assert env0 > 0 > env1 and ood < 0  # strengths +1, -1 in training, -1 out of distribution
    invariant_ood = latents.invariant_utility(data.ood_test[:, 0], data.ood_test[:, 1]).mean()
    assert invariant_ood > 0.3  # users still prefer items through z_inv out of distribution


def test_item_exposure_is_balanced_with_personal_spurious_taste() -> None:
    data = make_synthetic(DatasetConfig(synthetic=SyntheticConfig(spurious_shared=0.0)))
    degree = np.bincount(data.train[:, 1], minlength=data.n_items)
    # The default benchmark is cold-start OOD and cold-start IID: a quarter of the items is released only out of
    # distribution and 15% are held out for IID val / test; neither is clicked in training.
    assert data.ood_candidates is not None and len(data.ood_candidates) == data.n_items // 4
    assert data.iid_candidates is not None and len(data.iid_candidates) == round(0.15 * data.n_items)
    assert (degree[data.ood_candidates] == 0).all() and (degree[data.iid_candidates] == 0).all()
    released = np.setdiff1d(np.arange(data.n_items), np.concatenate([data.ood_candidates, data.iid_candidates]))
    assert degree[released].min() >= 1
    assert degree[released].max() <= 3 * degree[released].mean()


def test_shared_spurious_direction_plants_popularity_only_through_the_spurious_factor() -> None:
    data, latents = make_synthetic_with_latents(DatasetConfig())
    degree = np.bincount(data.train[:, 1], minlength=data.n_items).astype(np.float64)
    k_sp = latents.item_spurious.shape[1]
    spurious_appeal = latents.item_spurious @ latents.user_spurious[0] / math.sqrt(k_sp)
    # Net training strength +0.5 (strengths +1 / -1, shares 3 : 1): click-bait items are clicked more in training.
    assert np.corrcoef(spurious_appeal, degree)[0, 1] > 0.3
    invariant_appeal = latents.item_invariant @ latents.user_preference.mean(axis=0)
    assert abs(np.corrcoef(invariant_appeal, degree)[0, 1]) < 0.15


def test_without_spurious_factors_every_dim_is_invariant() -> None:
    data = make_synthetic(_cfg(n_spurious_factors=0, modality_dims=[4, 1]))
    invariant, *_ = _ground_truth(data)
    assert invariant.all() and invariant.shape == (5,)


def test_many_items_few_users() -> None:
    data = make_synthetic(_cfg(n_users=7, n_items=40_000, interactions_per_user=12))
    assert len(data.train) > 0 and data.train[:, 1].max() < 40_000


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"interactions_per_user": 301}, "dataset.synthetic.interactions_per_user"),
        ({"interactions_per_user": 4}, "dataset.synthetic.interactions_per_user"),
        ({"interactions_per_user": 6, "train_env_strengths": [1.0, 1.0, 1.0, 1.0, 1.0],
          "train_env_shares": []},
         "dataset.synthetic.interactions_per_user"),
        ({"n_users": 0}, "dataset.synthetic.n_users"),
        ({"n_invariant_factors": 0}, "dataset.synthetic.n_invariant_factors"),
        ({"n_spurious_factors": -1}, "dataset.synthetic.n_spurious_factors"),
        ({"modality_dims": []}, "dataset.synthetic.modality_dims"),
        ({"modality_dims": [8, 1]}, "dataset.synthetic.modality_dims"),
        ({"train_env_strengths": []}, "dataset.synthetic.train_env_strengths"),
        ({"train_env_strengths": [float("nan")]}, "dataset.synthetic.train_env_strengths"),
        ({"feature_noise": -0.1}, "dataset.synthetic.feature_noise"),
        ({"train_env_shares": [1.0]}, "dataset.synthetic.train_env_shares"),
        ({"train_env_shares": [1.0, 0.0]}, "dataset.synthetic.train_env_shares"),
        ({"train_env_shares": [1.0, float("inf")]}, "dataset.synthetic.train_env_shares"),
        ({"spurious_shared": 1.5}, "dataset.synthetic.spurious_shared"),
        ({"spurious_shared": float("nan")}, "dataset.synthetic.spurious_shared"),
        ({"ood_new_items": 1.0}, "dataset.synthetic.ood_new_items"),
        ({"ood_new_items": -0.1}, "dataset.synthetic.ood_new_items"),
        ({"ood_new_items": 0.02}, "dataset.synthetic.ood_new_items"),  # 6 new items, but each user clicks 10 OOD items
        ({"ood_new_items": 0.95}, "dataset.synthetic.ood_new_items"),  # 15 released items for 20 training clicks
        ({"iid_new_items": 1.0}, "dataset.synthetic.iid_new_items"),
        ({"iid_new_items": float("nan")}, "dataset.synthetic.iid_new_items"),
        # 3 held-out items, but 4 val + test clicks per user
        ({"iid_new_items": 0.01}, "dataset.synthetic.iid_new_items"),
        ({"iid_new_items": 0.7}, "dataset.synthetic.iid_new_items"),  # 15 warm items left for 16 train clicks per user
    ],
)
def test_impossible_configs_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PainvrlInputError, match=field.replace(".", r"\.")):
        make_synthetic(_cfg(**changes))


def test_environment_shares_set_each_users_positives_per_environment() -> None:
    cfg = _cfg(train_env_strengths=[1.0, -1.0], train_env_shares=[3.0, 1.0], interactions_per_user=31)
    data = make_synthetic(cfg)
    # 31 positives: 10 (= 31 // 3) in the OOD environment, the other 21 split 3:1 = 15.75 / 5.25, rounded by
    # largest remainder to 16 / 5.
    assert data.info["positives_per_env"] == [16, 5, 10]
    _, train_env, val_env, test_env = _ground_truth(data)
    per_env = np.bincount(np.concatenate([train_env, val_env, test_env]), minlength=2)
    np.testing.assert_array_equal(per_env, [16 * cfg.synthetic.n_users, 5 * cfg.synthetic.n_users])
    equal = make_synthetic(_cfg(train_env_strengths=[1.0, -1.0], train_env_shares=[], interactions_per_user=31))
    assert equal.info["positives_per_env"] == [11, 10, 10]


def test_shared_spurious_taste_is_one_direction_for_every_user() -> None:
    _, personal = make_synthetic_with_latents(_cfg(spurious_shared=0.0))
    _, shared = make_synthetic_with_latents(_cfg(spurious_shared=1.0))
    _, half = make_synthetic_with_latents(_cfg(spurious_shared=0.5))

    def mean_cosine(v: np.ndarray) -> float:
        unit = v / np.linalg.norm(v, axis=1, keepdims=True)
        off_diagonal = unit @ unit.T - np.eye(len(v))
        return float(off_diagonal.sum() / (len(v) * (len(v) - 1)))

    assert np.allclose(shared.user_spurious, shared.user_spurious[0])
    # The shared direction has the items' norm sqrt(k) on every seed: with a plain Gaussian draw its norm (the
    # benchmark's effective spurious strength) varied by a factor ~4 between seeds.
    k = shared.user_spurious.shape[1]
    for seed in range(5):
        _, latents = make_synthetic_with_latents(_cfg(spurious_shared=1.0, seed=seed))
        assert np.linalg.norm(latents.user_spurious[0]) == pytest.approx(math.sqrt(k))
    assert abs(mean_cosine(personal.user_spurious)) < 0.05
    assert 0.3 < mean_cosine(half.user_spurious) < 0.8


def test_cold_start_ood_releases_its_own_items_and_ranks_among_them() -> None:
    data = make_synthetic(_cfg(ood_new_items=0.25))
    new = data.ood_candidates
    assert new is not None and len(new) == 75 and data.info["ood_new_items"] == 75
    np.testing.assert_array_equal(new, np.unique(new))
    for split in (data.train, data.val, data.test):  # the training environments never click a new item
        assert not np.isin(split[:, 1], new).any()
    assert data.ood_val is not None and data.ood_test is not None
    for split in (data.ood_val, data.ood_test):  # the OOD environment clicks only new items
        assert np.isin(split[:, 1], new).all()
    # every user still gets all its positives
    assert len(data.ood_val) + len(data.ood_test) == SMALL.synthetic.n_users * 10


def test_cold_start_ood_leaves_other_data_unchanged_and_is_part_of_the_fingerprint() -> None:
    plain = make_synthetic(_cfg(ood_new_items=0.0))
    assert plain.ood_candidates is None and plain.info["ood_new_items"] == 0
    # The release draw has its own stream: the features (drawn before any click) are identical.
    cold = make_synthetic(_cfg(ood_new_items=0.25))
    for modality in plain.features:
        np.testing.assert_array_equal(plain.features[modality], cold.features[modality])
    assert cold.fingerprint() != plain.fingerprint()
    assert make_synthetic(_cfg(ood_new_items=0.25)).fingerprint() == cold.fingerprint()


def test_cold_start_iid_holds_items_out_of_training_and_ranks_val_test_among_them() -> None:
    data = make_synthetic(_cfg(iid_new_items=0.2))
    held, new = data.iid_candidates, data.ood_candidates
    assert held is not None and new is not None
    assert len(held) == 60 and data.info["iid_new_items"] == 60
    assert not np.isin(held, new).any()  # held out of training, but released in the training environments
    assert not np.isin(data.train[:, 1], held).any()
    assert not np.isin(data.train[:, 1], new).any()
    for split in (data.val, data.test):
        assert np.isin(split[:, 1], held).all()
        # every user keeps the 8:1:1 counts of its 20 training-environment positives: 2 val and 2 test
        np.testing.assert_array_equal(np.bincount(split[:, 0], minlength=SMALL.synthetic.n_users), 2)
    assert np.bincount(data.train[:, 0], minlength=SMALL.synthetic.n_users).min() == 16
    # val and test follow the training mixture: 4 held-out clicks per user split 3 : 1 over the environments
    _, train_env, val_env, test_env = _ground_truth(data)
    held_env = np.bincount(np.concatenate([val_env, test_env]), minlength=2)
    np.testing.assert_array_equal(held_env, [3 * SMALL.synthetic.n_users, 1 * SMALL.synthetic.n_users])
    n_users = SMALL.synthetic.n_users
    np.testing.assert_array_equal(np.bincount(train_env, minlength=2), [12 * n_users, 4 * n_users])
    assert make_synthetic(_cfg(iid_new_items=0.2)).fingerprint() == data.fingerprint()


def test_cold_start_iid_keeps_the_features_and_the_ood_items() -> None:
    plain = make_synthetic(_cfg())
    held = make_synthetic(_cfg(iid_new_items=0.2))
    assert plain.iid_candidates is None and plain.info["iid_new_items"] == 0
    for modality in plain.features:
        np.testing.assert_array_equal(plain.features[modality], held.features[modality])
    assert plain.ood_candidates is not None and held.ood_candidates is not None
    np.testing.assert_array_equal(plain.ood_candidates, held.ood_candidates)
    assert held.fingerprint() != plain.fingerprint()
