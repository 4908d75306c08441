"""Outer loop: end-to-end mask learning on a tiny synthetic dataset, history, schedule, methods, AUC helper."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from invariance_helpers import pretrained_backbone

from painvrl.config import Config, DatasetConfig, SyntheticConfig
from painvrl.data.dataset import InteractionData
from painvrl.data.synthetic import make_synthetic
from painvrl.errors import PainvrlInputError
from painvrl.invariance import masks
from painvrl.invariance.outer_loop import learn_invariant_mask, mask_auc
from painvrl.model.ultragcn import UltraGCN
from painvrl.training.methods import METHODS


@pytest.fixture(scope="module")
def tiny() -> tuple[InteractionData, UltraGCN]:
    # The spurious factor helps in one training environment (+2) and hurts in the other (-1): on average it
    # still predicts training clicks, so ERM alone keeps it; invariance must close it.
    data = make_synthetic(DatasetConfig(synthetic=SyntheticConfig(
        n_users=200, n_items=300, modality_dims=[16, 16], interactions_per_user=30, train_env_strengths=[2.0, -1.0],
        train_env_shares=[], spurious_shared=0.0)))
    return data, pretrained_backbone(data)


def _config(**mask: Any) -> Config:
    cfg = Config(method="painvrl")
    cfg.model.k_id = cfg.model.k_f = 16
    cfg.model.n_negatives = 10
    cfg.train.batch_size = 256
    cfg.train.progress = False
    cfg.environments.env_epochs = 5
    cfg.environments.max_iters = 5
    cfg.painvrl.rounds = 2
    cfg.mask.epochs = 10
    cfg.mask.lr = 1e-2
    cfg.mask.warmup_steps = 5
    for key, value in mask.items():
        setattr(cfg.mask, key, value)
    return cfg


def test_mask_ranks_invariant_dims_above_spurious(tiny: tuple[InteractionData, UltraGCN],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Pinned to the settings this test was written for, which differ from the defaults: gradvar from a
    # fresh W with sigma 0.01.
    data, pretrained = tiny
    assert data.ground_truth is not None and data.ground_truth.invariant_dims is not None
    invariant = data.ground_truth.invariant_dims
    records: list[dict[str, Any]] = []
    pinned = {"penalty": "gradvar", "sigma": 0.01, "sparsity_weight": 1e-3, "init_from_pretrained": False}

    def pinned_config(**mask: Any) -> Config:
        cfg = _config(**pinned, **mask)
        cfg.painvrl.mask_average = "last"  # and the last round's mask, not the default average over rounds
        return cfg

    result = learn_invariant_mask(pinned_config(), data, pretrained, log=records.append)
    auc = mask_auc(result.mask, invariant)
    assert auc > 0.8, auc
    # A preference for the IID objective (pref_ood -> 0) keeps the spurious dims: much lower AUC.
    iid = learn_invariant_mask(pinned_config(pref_ood=0.05), data, pretrained)
    assert mask_auc(iid.mask, invariant) < auc - 0.2
    # outputs and history
    assert result.mask.shape == (data.feature_dim,) and result.mask.dtype == np.float32
    assert ((result.mask >= 0) & (result.mask <= 1)).all()
    assert result.env_labels.shape == (len(data.train),) and sum(result.env_sizes) == len(data.train)
    assert result.ari is not None and -1.0 <= result.ari <= 1.0
    assert records == result.history
    phases = [r["phase"] for r in result.history]
    assert phases.count("hei") == 2 and phases.count("round") == 2 and phases.count("img") == 20
    rounds = [r for r in result.history if r["phase"] == "round"]
    assert rounds[1]["sparsity_weight"] == pytest.approx(rounds[0]["sparsity_weight"] * 1.05)
    assert rounds[-1]["mask_auc"] == pytest.approx(auc)
    img = [r for r in result.history if r["phase"] == "img"][-1]
    assert set(img) >= {"alpha", "non_uniformity", "cosine_erm_irm", "modes", "density", "fraction_open"}
    labels = result.label_pairs(data.test)
    assert labels.shape == (len(data.test),) and labels.min() >= 0 and labels.max() < 2


def test_invrl_method_uses_linear_solver_and_l2(tiny: tuple[InteractionData, UltraGCN]) -> None:
    data, pretrained = tiny
    cfg = _config()
    cfg.method = "invrl"
    cfg.painvrl.rounds = 1
    cfg.mask.epochs = 2
    result = learn_invariant_mask(METHODS["invrl"].effective_config(cfg), data, pretrained)
    round_record = next(r for r in result.history if r["phase"] == "round")
    assert round_record["solver"] == "linear" and round_record["preference"] == pytest.approx([0.5, 0.5])
    img = [r for r in result.history if r["phase"] == "img"][-1]
    assert set(img["modes"]) == {"linear"} and img["alpha"] == pytest.approx([0.5, 0.5])


def test_mask_auc() -> None:
    truth = np.array([True, True, False, False])
    assert mask_auc(np.array([0.9, 0.8, 0.1, 0.2]), truth) == 1.0
    assert mask_auc(np.array([0.1, 0.2, 0.9, 0.8]), truth) == 0.0
    assert mask_auc(np.full(4, 0.5), truth) == 0.5


def test_known_environments_ablation_trains_imgs_on_the_true_environments(
        tiny: tuple[InteractionData, UltraGCN]) -> None:
    data, pretrained = tiny
    assert data.ground_truth is not None and data.ground_truth.train_env is not None
    cfg = _config()
    cfg.environments.source = "ground_truth"
    seen: list[np.ndarray] = []
    real = masks.learn_mask

    def spy(backbone: UltraGCN, train: np.ndarray, labels: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        seen.append(labels.copy())
        return real(backbone, train, labels, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("painvrl.invariance.outer_loop.learn_mask", spy)
        result = learn_invariant_mask(cfg, data, pretrained)
    assert len(seen) == cfg.painvrl.rounds
    for labels in seen:
        np.testing.assert_array_equal(labels, data.ground_truth.train_env)
    assert result.ari == 1.0
    assert result.env_sizes == np.bincount(data.ground_truth.train_env).tolist()
    np.testing.assert_array_equal(result.label_pairs(data.test), data.ground_truth.test_env)
    np.testing.assert_array_equal(result.label_pairs(data.val[::-1]), data.ground_truth.val_env[::-1])
    assert [r["source"] for r in result.history if r["phase"] == "hei"] == ["ground_truth"] * cfg.painvrl.rounds
    with pytest.raises(ValueError, match="only the dataset's own"):
        result.label_pairs(np.array([[0, 10**6]]))


def test_known_environments_need_a_dataset_that_has_them(tiny: tuple[InteractionData, UltraGCN]) -> None:
    data, pretrained = tiny
    cfg = _config()
    cfg.environments.source = "ground_truth"
    cfg.environments.n_envs = 3
    with pytest.raises(PainvrlInputError, match=r"environments\.n_envs"):
        learn_invariant_mask(cfg, data, pretrained)
    cfg.environments.n_envs = 2
    no_truth = dataclasses.replace(data, ground_truth=None)
    with pytest.raises(PainvrlInputError, match=r"environments\.source"):
        learn_invariant_mask(cfg, no_truth, pretrained)


@pytest.mark.parametrize(("method", "average", "effective"), [
    ("painvrl", "last", "last"), ("painvrl", "logits", "logits"), ("invrl", "logits", "last")])
def test_mask_handed_on_is_the_last_rounds_or_the_mean_of_the_rounds_logits(
        tiny: tuple[InteractionData, UltraGCN], monkeypatch: pytest.MonkeyPatch, method: str, average: str,
        effective: str) -> None:
    from painvrl.invariance import identify, outer_loop

    round_logits: list[np.ndarray] = []
    hei_masks: list[np.ndarray] = []
    learn, models = outer_loop.learn_mask, identify.environment_models

    def recording_learn_mask(*args: Any, **kwargs: Any) -> Any:
        result = learn(*args, **kwargs)
        round_logits.append(result.model.gate.mu.detach().cpu().numpy().astype(np.float64))
        return result

    def recording_models(n_envs: int, pretrained: UltraGCN, mask: Any, *args: Any, **kwargs: Any) -> Any:
        hei_masks.append(mask.detach().cpu().numpy().copy())
        return models(n_envs, pretrained, mask, *args, **kwargs)

    monkeypatch.setattr(outer_loop, "learn_mask", recording_learn_mask)
    monkeypatch.setattr(identify, "environment_models", recording_models)
    data, pretrained = tiny
    cfg = _config(epochs=3)
    cfg.method = method  # type: ignore[assignment]
    cfg.painvrl.rounds = 3
    cfg.painvrl.mask_average = average  # type: ignore[assignment]
    result = learn_invariant_mask(METHODS[method].effective_config(cfg), data, pretrained)
    assert len(round_logits) == 3 and len(hei_masks) == 3
    assert not np.allclose(round_logits[0], round_logits[-1])  # the rounds differ, so the two options do
    np.testing.assert_allclose(hei_masks[0], 0.5)
    for t in range(3):
        expected = np.mean(round_logits[: t + 1], axis=0) if effective == "logits" else round_logits[t]
        handed = np.clip(expected + 0.5, 0.0, 1.0)
        if t + 1 < 3:  # what round t hands on is the next round's HEI input
            np.testing.assert_allclose(hei_masks[t + 1], handed, atol=1e-6)
    np.testing.assert_allclose(result.logits, expected, atol=1e-6)
    np.testing.assert_allclose(result.mask, handed, atol=1e-6)
    invariant = data.ground_truth.invariant_dims  # type: ignore[union-attr]
    rounds = [r for r in result.history if r["phase"] == "round"]
    assert rounds[-1]["mask_auc"] == pytest.approx(mask_auc(result.mask, invariant))
    assert rounds[-1]["round_mask_auc"] == pytest.approx(
        mask_auc(np.clip(round_logits[-1] + 0.5, 0.0, 1.0), invariant))


def test_a_round_whose_mask_opens_every_gate_keeps_the_previous_environments(
        tiny: tuple[InteractionData, UltraGCN], monkeypatch: pytest.MonkeyPatch) -> None:
    """IMG is made to open every gate (as it does with a near-zero sparsity weight and a preference near pure
    ERM). The next round's environment models would see the variant part (1 - m) * f = 0 and tie on every
    positive, which stops HEI with an error; the round keeps the previous round's environments instead, and its
    record says so."""
    import torch

    from painvrl.invariance import outer_loop

    learn = outer_loop.learn_mask

    def opening_learn_mask(*args: Any, **kwargs: Any) -> Any:
        result = learn(*args, **kwargs)
        with torch.no_grad():
            result.model.gate.mu.fill_(1.0)
        return result

    monkeypatch.setattr(outer_loop, "learn_mask", opening_learn_mask)
    data, pretrained = tiny
    result = learn_invariant_mask(_config(epochs=3), data, pretrained)
    hei = [r for r in result.history if r["phase"] == "hei"]
    assert len(hei) == 2 and hei[0]["source"] == "hei"
    assert hei[1]["source"] == "previous_round" and hei[1]["env_sizes"] == hei[0]["env_sizes"]
    assert result.env_sizes == hei[0]["env_sizes"]
    np.testing.assert_allclose(result.mask, 1.0)
