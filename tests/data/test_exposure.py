"""Tests of the synthetic exposure-bias benchmark (painvrl/data/exposure.py, ``scenario: exposure``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import painvrl.data.synthetic as synthetic
from painvrl.config import DatasetConfig, SyntheticConfig, load_config
from painvrl.data.dataset import InteractionData
from painvrl.data.exposure import EXPOSURE_COLUMNS, uniform_exposure
from painvrl.data.registry import load_dataset
from painvrl.data.synthetic import make_synthetic, make_synthetic_with_latents
from painvrl.errors import PainvrlInputError
from painvrl.runner import train

SMALL = DatasetConfig(seed=5, synthetic=SyntheticConfig(scenario="exposure", n_users=200, n_items=500,
                                                        modality_dims=[12, 8]))


def _cfg(seed: int | None = None, **changes: Any) -> DatasetConfig:
    """SMALL with ``changes`` to its synthetic section (and another data seed)."""
    return dataclasses.replace(SMALL, seed=SMALL.seed if seed is None else seed,
                               synthetic=dataclasses.replace(SMALL.synthetic, **changes))


def _front(data: InteractionData) -> np.ndarray:
    """bool [n_items]: the front-page items, read off the flag column of the first block."""
    column = data.features["m0"][:, data.info["exposure_columns"]["front_page"]]
    return np.asarray(column > column.mean())


def _share(pairs: np.ndarray | None, front: np.ndarray) -> float:
    assert pairs is not None
    return float(front[pairs[:, 1]].mean())


def test_training_clicks_follow_exposure_and_ood_clicks_do_not() -> None:
    data = make_synthetic(SMALL)
    front = _front(data)
    assert data.info["n_front_items"] == int(front.sum())
    assert data.ood_candidates is not None and data.iid_candidates is not None
    ood_base = float(front[data.ood_candidates].mean())  # uniform exposure: the candidates' own front share
    warm = np.setdiff1d(np.arange(data.n_items), np.concatenate([data.ood_candidates, data.iid_candidates]))
    train_base = float(front[warm].mean())
    assert 0.1 < train_base < 0.3 and 0.1 < ood_base < 0.3  # exposure_front_fraction = 0.2
    # The default Zipf exposure puts ~95% of the training-policy clicks on the front page, 4x+ its item share.
    for split in (data.train, data.val, data.test):
        assert _share(split, front) > 0.85
    # OOD clicks: uniform exposure, relevance independent of the flag: the candidates' share within 0.05.
    for split in (data.ood_val, data.ood_test):
        assert abs(_share(split, front) - ood_base) < 0.05
    assert _share(data.train, front) / _share(data.ood_test, front) > 3.0
    assert data.info["front_share_train"] == pytest.approx(_share(data.train, front), abs=1e-4)


def test_strength_zero_is_the_uniform_reference_on_the_same_ood_rows() -> None:
    biased = make_synthetic(SMALL)
    uniform = make_synthetic(uniform_exposure(SMALL))
    front = _front(biased)
    assert uniform.info["exposure_strength"] == 0.0
    np.testing.assert_array_equal(_front(uniform), front)
    for split in ("ood_val", "ood_test"):
        np.testing.assert_array_equal(getattr(uniform, split), getattr(biased, split))
    for modality, block in biased.features.items():
        np.testing.assert_array_equal(uniform.features[modality], block)
    assert len(uniform.train) == len(biased.train) and len(uniform.test) == len(biased.test)
    assert uniform.info["front_share_train"] < 0.3 < 0.85 < biased.info["front_share_train"]
    assert uniform.ground_truth is not None and uniform.ground_truth.item_propensity is not None
    np.testing.assert_array_equal(uniform.ground_truth.item_propensity, np.ones(uniform.n_items))


def test_deterministic_in_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = make_synthetic(SMALL), make_synthetic(SMALL)
    assert a.fingerprint() == b.fingerprint()
    assert a.ground_truth is not None and b.ground_truth is not None
    for name in ("train_env", "val_env", "test_env", "invariant_dims", "item_propensity"):
        np.testing.assert_array_equal(getattr(a.ground_truth, name), getattr(b.ground_truth, name))
    assert make_synthetic(_cfg(seed=6)).fingerprint() != a.fingerprint()
    assert make_synthetic(_cfg(scenario="features")).fingerprint() != a.fingerprint()
    monkeypatch.setattr(synthetic, "CHUNK_ELEMENTS", SMALL.synthetic.n_items * 7)  # 7 users per sampling chunk
    assert make_synthetic(SMALL).fingerprint() == a.fingerprint()


def test_ground_truth_propensity_invariant_dims_and_environments() -> None:
    data, latents = make_synthetic_with_latents(_cfg(exposure_strength=2.0))
    truth = data.ground_truth
    assert truth is not None and truth.item_propensity is not None and truth.invariant_dims is not None
    assert truth.train_env is not None and truth.val_env is not None and truth.test_env is not None
    front = _front(data)
    propensity = truth.item_propensity
    assert propensity.shape == (data.n_items,) and propensity.dtype == np.float64
    assert propensity.max() == 1.0 and (propensity > 0).all()
    np.testing.assert_array_equal(propensity[front], 1.0)
    assert (propensity[~front] < 1.0).sum() == (~front).sum() - 1  # only the head of the tail reaches 1
    # The training policy at strength s: p^s, normalised; the latents keep log p of strength 1.
    np.testing.assert_allclose(propensity, np.exp(2.0 * latents.item_spurious[:, 0]), rtol=1e-12)
    assert latents.strengths == [2.0, 0.0]
    # Invariant dims: every column but the two exposure columns of the first block.
    invariant = truth.invariant_dims
    assert invariant.dtype == np.bool_ and invariant.shape == (data.feature_dim,) == (20,)
    assert list(data.info["exposure_columns"]) == list(EXPOSURE_COLUMNS)
    assert sorted(np.flatnonzero(~invariant).tolist()) == sorted(data.info["exposure_columns"].values())
    assert data.info["n_invariant_dims"] == 18
    # Environments: the clicked item is on the front page (1) or not (0).
    for pairs, env in ((data.train, truth.train_env), (data.val, truth.val_env), (data.test, truth.test_env)):
        assert env.dtype == np.int64
        np.testing.assert_array_equal(env, front[pairs[:, 1]].astype(np.int64))
    assert set(np.unique(truth.train_env).tolist()) == {0, 1}


def test_features_carry_content_and_exposure_in_the_marked_columns() -> None:
    data, latents = make_synthetic_with_latents(_cfg(feature_noise=0.0, exposure_popularity_noise=0.0))
    columns = data.info["exposure_columns"]
    popularity = data.features["m0"][:, columns["popularity"]].astype(np.float64)
    log_p = latents.item_spurious[:, 0]
    assert np.corrcoef(popularity, log_p)[0, 1] > 0.999
    # Content columns are linear in the item content vectors (no noise here): a least-squares fit is exact.
    invariant = data.ground_truth.invariant_dims if data.ground_truth else None
    assert invariant is not None
    raw = np.concatenate(list(data.features.values()), axis=1)[:, invariant].astype(np.float64)
    assert raw.shape[1] == 18
    fit = np.linalg.lstsq(latents.item_invariant, raw, rcond=None)[0]
    np.testing.assert_allclose(latents.item_invariant @ fit, raw, atol=1e-4)


@pytest.mark.parametrize(("change", "field"), [
    ({"exposure_front_fraction": 1.5}, "exposure_front_fraction"),
    ({"exposure_front_fraction": -0.1}, "exposure_front_fraction"),
    ({"exposure_offpage_max": 0.0}, "exposure_offpage_max"),
    ({"exposure_offpage_max": 2.0}, "exposure_offpage_max"),
    ({"exposure_tail": -1.0}, "exposure_tail"),
    ({"exposure_strength": -0.5}, "exposure_strength"),
    ({"exposure_strength": float("nan")}, "exposure_strength"),
    ({"exposure_popularity_noise": -1.0}, "exposure_popularity_noise"),
])
def test_bad_exposure_knobs_are_refused_naming_the_field(change: dict[str, float], field: str) -> None:
    with pytest.raises(PainvrlInputError, match=rf"'dataset\.synthetic\.{field}'"):
        make_synthetic(_cfg(**change))
    (key, value), = change.items()
    with pytest.raises(PainvrlInputError, match=rf"'dataset\.synthetic\.{field}'"):
        load_config(None, ["dataset.synthetic.scenario=exposure", f"dataset.synthetic.{key}={value}"])


@pytest.mark.parametrize(("change", "field"), [
    ({"modality_dims": [2, 8]}, "modality_dims"),
    ({"interactions_per_user": 4}, "interactions_per_user"),
    ({"ood_new_items": 0.01}, "ood_new_items"),  # 5 new items, 10 OOD clicks per user
    ({"iid_new_items": 1.0}, "iid_new_items"),
])
def test_impossible_sizes_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(PainvrlInputError, match=rf"'dataset\.synthetic\.{field}'"):
        make_synthetic(_cfg(**change))


def test_the_features_scenario_ignores_the_exposure_knobs() -> None:
    reference = make_synthetic(_cfg(scenario="features")).fingerprint()
    changed = _cfg(scenario="features", exposure_front_fraction=0.9, exposure_strength=3.0)
    assert make_synthetic(changed).fingerprint() == reference
    load_config(None, ["dataset.synthetic.exposure_front_fraction=7"])  # not read, so not refused


def test_warm_ood_clicks_are_on_training_items_but_not_the_users_own() -> None:
    data = make_synthetic(_cfg(ood_new_items=0.0, iid_new_items=0.0))
    assert data.ood_candidates is None and data.iid_candidates is None
    assert data.ood_test is not None
    seen = {tuple(pair) for pair in np.concatenate([data.train, data.val, data.test]).tolist()}
    assert not seen & {tuple(pair) for pair in data.ood_test.tolist()}
    front = _front(data)
    # The OOD session has click noise of its own: its front-page share stays near the front page's item share.
    assert _share(data.train, front) > 0.85 and 0.1 < _share(data.ood_test, front) < 0.3


def test_registry_loads_the_scenario_from_the_config() -> None:
    config = load_config(None, ["dataset.synthetic.scenario=exposure", "dataset.ood=synthetic",
                                "dataset.synthetic.n_users=80", "dataset.synthetic.n_items=200"])
    data = load_dataset(config.dataset)
    assert data.info["scenario"] == "exposure" and data.info["ood_source"] == "synthetic"
    assert data.has_ood_validation()
    summary = data.summary()
    assert summary["front_share_train"] > 0.8 and summary["n_front_items"] > 0


def test_erm_runs_end_to_end_on_a_tiny_exposure_dataset(tmp_path: Path) -> None:
    config = load_config(None, [
        "method=erm", "model.name=ultragcn", "dataset.ood=synthetic", "dataset.synthetic.scenario=exposure",
        "dataset.synthetic.n_users=60", "dataset.synthetic.n_items=120", "dataset.synthetic.interactions_per_user=12",
        "dataset.synthetic.modality_dims=[6,4]", "model.k_id=4", "model.k_f=4", "model.n_negatives=3",
        "train.epochs=2", "train.batch_size=64", "train.progress=false", "train.device=cpu"])
    metrics = train(config, tmp_path / "run")
    for split in ("val", "test"):
        for kind in ("iid", "ood"):
            assert 0.0 <= metrics[split][kind]["recall@20"] <= 1.0
    # The true environments (front page or not) label the IID splits.
    assert set(metrics["test"]["envs"]) == {"0", "1"}
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test"]["ood"]["recall@20"] == metrics["test"]["ood"]["recall@20"]
