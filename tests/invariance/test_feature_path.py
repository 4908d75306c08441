"""The feature path: HEI's environment models and IMG's mask model reach every backbone, and degenerate
environment identification is an error, never a quantile split."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from painvrl.config import EnvironmentsConfig, load_config
from painvrl.distributed.collective import LocalCollective
from painvrl.errors import PainvrlInputError
from painvrl.invariance import environments
from painvrl.invariance.environments import (
    check_not_tied,
    environment_models,
    identify_environments,
    reseed_small,
    tied_fraction,
    train_environment_models,
)
from painvrl.invariance.feature_path import FeaturePathScorer, fit_scale, invariance_scorer
from painvrl.model.registry import MODELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from backbone_helpers import tiny_context, train_steps

FEATURE_BACKBONES = sorted(name for name, cls in MODELS.items() if cls.consumes_features)


def test_fit_scale_recovers_a_logistic_calibration() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(200_000, generator=gen) * 3.0
    labels = torch.rand(200_000, generator=gen) < torch.sigmoid(2.0 * scores - 1.0)
    a, c = fit_scale(scores[labels], scores[~labels])
    assert a == pytest.approx(2.0, abs=0.05) and c == pytest.approx(-1.0, abs=0.05)


def _trained_backbone(name: str) -> tuple[torch.nn.Module, np.ndarray]:
    context = tiny_context(n_users=24, n_items=30, d_per_modality=6, density=0.25)
    torch.manual_seed(0)
    model = MODELS[name].build(context)
    train_steps(model, context, steps=40, lr=0.02)
    return model, np.asarray(context.train, dtype=np.int64)


def _config(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(None, ["model.k_f=8", "model.n_negatives=4", "model.negative_pool=0", "train.batch_size=32",
                              "painvrl.feature_path_epochs=5", *overrides])


@pytest.mark.parametrize("name", FEATURE_BACKBONES)
def test_environment_models_fit_differently_over_every_feature_backbone(name: str) -> None:
    """Fails when the environment models' scores ignore their projections (FREEDOM and BM3 through their slot)."""
    backbone, train = _trained_backbone(name)
    scorer, record = invariance_scorer(_config(), train, backbone)
    assert record["source"] == name
    models = environment_models(2, scorer, torch.full((12,), 0.5), k_f=8, init_std=0.1,
                                generator=torch.Generator().manual_seed(1))
    labels = np.arange(len(train)) % 2
    train_environment_models(models, train, labels, epochs=3, lr=0.05, batch_size=32, n_negatives=4, seed=0,
                             keys=(0,), collective=LocalCollective())
    fits = environments._fits_of(models, train, "score", 4, 0, (0,), LocalCollective())
    assert tied_fraction(fits) < 0.05
    assert np.abs(fits[:, 0] - fits[:, 1]).mean() > 1e-4


@pytest.mark.parametrize("name", ["freedom", "bm3"])
def test_through_their_own_slot_the_environment_models_tie_and_hei_says_so(name: str) -> None:
    """Why the methods learn on the feature path: FREEDOM's and BM3's ranking scores never read the encoder
    slot, so environment models that differ only there score every positive alike."""
    from autograd_reference import EnvironmentModels

    backbone, train = _trained_backbone(name)
    models = EnvironmentModels(2, backbone, torch.full((12,), 0.5), 8, init_std=0.1,
                               generator=torch.Generator().manual_seed(1))
    cfg = EnvironmentsConfig(n_envs=2, max_iters=2, env_epochs=1)
    with pytest.raises(PainvrlInputError, match=rf"model '{name}'.*identically"):
        identify_environments(models, train, cfg, batch_size=32, n_negatives=4, seed=0, backbone=name)


def test_the_feature_path_keeps_the_backbone_score_as_its_id_part() -> None:
    backbone, train = _trained_backbone("freedom")
    scorer, _ = invariance_scorer(_config(), train, backbone)
    assert isinstance(scorer, FeaturePathScorer)
    users, items = backbone.score_factors()
    a, c = scorer.calibration
    u, i = torch.as_tensor(train[:20, 0]), torch.as_tensor(train[:20, 1])
    k_id = scorer.k_id
    id_part = (scorer.user_embedding[u, :k_id] * scorer.item_embedding[i]).sum(-1)
    torch.testing.assert_close(id_part, a * (users[u] * items[i]).sum(-1) + c, rtol=1e-4, atol=1e-5)
    assert not any(p.requires_grad for p in scorer.parameters())


def test_a_linear_content_backbone_is_its_own_feature_path() -> None:
    backbone, train = _trained_backbone("ultragcn")
    scorer, record = invariance_scorer(_config(), train, backbone)
    assert scorer is backbone and record["fitted"] is False


def test_tied_fits_are_an_error_that_names_the_backbone() -> None:
    fits = np.array([[1.0, 1.0], [2.0, 2.0 + 1e-9], [0.5, 0.1]])
    assert tied_fraction(fits) == pytest.approx(2 / 3)
    with pytest.raises(PainvrlInputError, match=r"model 'freedom'.*67%"):
        check_not_tied(fits, 0.5, "freedom", 2)
    check_not_tied(fits, 0.7, "freedom", 2)


def test_small_environments_are_reseeded_by_the_models_disagreement() -> None:
    # environment 1 holds one positive, minimum 3: the two positives of environment 0 that model 1 fits best
    # RELATIVE to model 0 move (rows 2 and 4), not the ones with the highest fit under model 1 (row 0)
    fits = np.array([[5.0, 4.0], [1.0, 0.0], [1.0, 0.9], [0.0, 3.0], [2.0, 1.95], [3.0, 1.0]])
    labels = np.array([0, 0, 0, 1, 0, 0])
    events = reseed_small(fits, labels, min_count=3, iteration=2)
    assert labels.tolist() == [0, 0, 1, 1, 1, 0]
    assert events == [{"iteration": 2, "empty": 1, "split_from": 0, "moved": 2, "size": 1}]


def test_hei_enforces_the_minimum_size_and_stops_on_convergence() -> None:
    backbone, train = _trained_backbone("ultragcn")
    models = environment_models(3, backbone, torch.full((12,), 0.5), k_f=8, init_std=0.1,
                                generator=torch.Generator().manual_seed(1))
    cfg = EnvironmentsConfig(n_envs=3, max_iters=30, env_epochs=2, lr=0.05, min_size=0.2, change_tol=0.05)
    result = identify_environments(models, train, cfg, batch_size=32, n_negatives=4, seed=0)
    assert min(result.sizes) >= np.ceil(0.2 * len(train))
    assert result.iterations < 30 and result.churn[-1] <= 0.05
    assert all(c > 0.05 for c in result.churn[:-1])


def test_validation_pairs_are_labelled_by_the_training_rule_over_a_feature_path() -> None:
    backbone, train = _trained_backbone("bm3")
    scorer, _ = invariance_scorer(_config(), train, backbone)
    models = environment_models(2, scorer, torch.full((12,), 0.5), k_f=8, init_std=0.1,
                                generator=torch.Generator().manual_seed(1))
    cfg = EnvironmentsConfig(n_envs=2, max_iters=3, env_epochs=2, lr=0.05, min_size=0.0)
    result = identify_environments(models, train, cfg, batch_size=32, n_negatives=4, seed=0, backbone="bm3")
    assert result.label_pairs is not None and not result.reseeded
    relabelled = result.label_pairs(train)
    np.testing.assert_array_equal(relabelled, result.labels)
    assert len(set(relabelled.tolist())) == 2


STRONG_FLIP = ["dataset.synthetic.train_env_strengths=[2.0,-1.5]", "dataset.synthetic.ood_env_strength=-2.0",
               "train.progress=false", "painvrl.rounds=1", "environments.max_iters=20", "mask.epochs=1"]


@pytest.mark.parametrize("name", ["freedom", "bm3"])
def test_hei_over_the_feature_path_recovers_a_strongly_flipped_shift(name: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """On the benchmark's strongly flipped shift HEI over FREEDOM and BM3 finds the true environments (through
    their own slot it finds none: every fit ties). 20 EM iterations from a random start, one round."""
    import painvrl.invariance.outer_loop as outer_loop
    from painvrl.data.registry import load_dataset
    from painvrl.training.pipeline import run_pipeline

    config = load_config(None, [*STRONG_FLIP, f"model.name={name}", "method=painvrl"])
    data = load_dataset(config.dataset)
    found = {}
    learn = outer_loop.learn_invariant_mask

    def learn_and_stop(config, data, pretrained, collective=None, log=None):  # type: ignore[no-untyped-def]
        found["result"] = learn(config, data, pretrained, collective, log)
        raise KeyboardInterrupt  # the final model is not needed

    monkeypatch.setattr(outer_loop, "learn_invariant_mask", learn_and_stop)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, data)
    result = found["result"]
    hei = next(r for r in result.history if r.get("phase") == "hei")
    assert result.ari is not None and result.ari >= 0.5, (result.ari, hei["churn"], result.env_sizes)
