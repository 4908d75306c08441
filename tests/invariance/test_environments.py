"""HEI: batched environment models, relabelling, recovery of planted environments, ARI."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from invariance_helpers import pretrained_backbone, run_two_ranks

from painvrl.config import EnvironmentsConfig
from painvrl.distributed.collective import LocalCollective
from painvrl.invariance import environments
from painvrl.invariance.environments import (
    adjusted_rand_index,
    identify_environments,
    train_environment_models,
)
from painvrl.invariance.linear_models import StackedEnvironmentModels
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN


def _backbone(n_users: int = 30, n_items: int = 50, d: int = 12, k_id: int = 4, k_f: int = 6,
              seed: int = 0) -> tuple[UltraGCN, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n_items, d, generator=gen), dim=1)
    train = np.stack([np.arange(n_users).repeat(4), (np.arange(n_users * 4) * 7) % n_items], axis=1)
    from painvrl.model.ultragcn import degree_weights

    b_u, b_i = degree_weights(train, n_users, n_items)
    model = UltraGCN(n_users, n_items, features, FeatureProjection(d, k_f), b_u, b_i, k_id=k_id, k_f=k_f)
    with torch.no_grad():
        model.user_embedding.copy_(torch.randn(n_users, k_id + k_f, generator=gen))
        model.item_embedding.copy_(torch.randn(n_items, k_id, generator=gen) * 0.3)
    return model, train.astype(np.int64)


def test_batched_models_equal_separate_models() -> None:
    backbone, train = _backbone()
    models = StackedEnvironmentModels(3, backbone, torch.full((12,), 0.3), k_f=6, input_mode="invrl", l1_rho=0.2,
                               init_std=0.5, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    users, pos = torch.as_tensor(train[:40, 0]), torch.as_tensor(train[:40, 1])
    negs = torch.randint(50, (40, 5), generator=gen)
    envs = torch.randint(3, (40,), generator=gen)
    loss = models.example_losses(users, pos, negs, envs).sum() / 40
    loss.backward()
    batched_grad = models.weight.grad.clone()
    # Reference: E separate single-env backbones with the same init, each on its own rows only.
    for env in range(3):
        sel = envs == env
        ref = UltraGCN(backbone.n_users, backbone.n_items, backbone.features, FeatureProjection(12, 6),
                       backbone.b_user, backbone.b_item, k_id=4, k_f=6)
        with torch.no_grad():
            ref.user_embedding.copy_(backbone.user_embedding)
            ref.item_embedding.copy_(backbone.item_embedding)
            ref.encoder.weight.copy_(models.weight[env])
        ref.features = backbone.features * 1.0  # invrl input: full features
        _, _, pos_s, neg_s = ref.batch_scores(users[sel], pos[sel], negs[sel])
        per = ref.scores_loss(users[sel], pos[sel], pos_s, negs[sel], neg_s)
        (per.sum() / 40).backward()
        torch.testing.assert_close(batched_grad[env], ref.encoder.weight.grad, rtol=1e-5, atol=1e-7)
        # all-model scoring equals each model's own scores
        all_scores = models.score_all(users[sel], pos[sel])[:, env]
        torch.testing.assert_close(all_scores, pos_s.detach(), rtol=1e-5, atol=1e-6)
        all_losses = models.loss_all(users[sel], pos[sel], negs[sel])[:, env]
        torch.testing.assert_close(all_losses, per.detach(), rtol=1e-5, atol=1e-6)


def test_pooled_negatives_equal_explicit_negatives() -> None:
    backbone, train = _backbone()
    models = StackedEnvironmentModels(3, backbone, torch.full((12,), 0.4), k_f=6, init_std=0.5,
                               generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(4)
    users, pos = torch.as_tensor(train[:30, 0]), torch.as_tensor(train[:30, 1])
    envs = torch.randint(3, (30,), generator=gen)
    pools = torch.randint(50, (3, 7), generator=gen)
    positions = torch.randint(7, (30, 5), generator=gen)
    negs = torch.stack([pools[e][p] for e, p in zip(envs.tolist(), positions, strict=True)])
    torch.testing.assert_close(models.example_losses_pooled(users, pos, pools, positions, envs),
                               models.example_losses(users, pos, negs, envs))


def test_pooled_training_runs_and_is_deterministic() -> None:
    backbone, train = _backbone()
    labels = np.arange(len(train)) % 3

    def run() -> torch.Tensor:
        models = StackedEnvironmentModels(3, backbone, torch.full((12,), 0.5), k_f=6,
                                   generator=torch.Generator().manual_seed(0))
        losses = train_environment_models(models, train, labels, 2, 0.01, 32, 4, 0, (0, 0), LocalCollective(),
                                          negative_pool=30)
        assert len(losses) == 2 and all(np.isfinite(losses))
        return models.weight.detach().clone()

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_variant_input_masks_features() -> None:
    backbone, _ = _backbone()
    mask = torch.zeros(12)
    mask[:6] = 1.0
    models = StackedEnvironmentModels(2, backbone, mask, k_f=6)
    x = models.inputs(torch.arange(5))
    assert torch.all(x[:, :6] == 0) and torch.allclose(x[:, 6:], backbone.features[:5, 6:])


def _planted(seed: int = 0) -> tuple[UltraGCN, np.ndarray, np.ndarray]:
    """Two environments whose positives are explained by two different variant projections M0, M1."""
    n_users, n_items, d, k_id, k_f = 80, 150, 16, 2, 8
    backbone, _ = _backbone(n_users, n_items, d, k_id, k_f, seed)
    gen = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        backbone.item_embedding.zero_()
    user_f = backbone.user_embedding[:, k_id:].detach()
    base = torch.randn(k_f, d, generator=gen)
    planted = [base, -base]  # the variant effect flips sign between the environments
    rows, envs = [], []
    for env, weight in enumerate(planted):
        util = user_f @ (backbone.features @ weight.T).T  # [U, I]
        top = util.topk(6, dim=1).indices
        for u in range(n_users):
            for i in top[u].tolist():
                rows.append((u, i))
                envs.append(env)
    pairs = np.array(rows, dtype=np.int64)
    labels = np.array(envs, dtype=np.int64)
    _, first = np.unique(pairs, axis=0, return_index=True)  # drop pairs positive in both environments
    keep = np.sort(first)
    return backbone, pairs[keep], labels[keep]


@pytest.mark.parametrize("relabel", ["score", "loss"])
def test_hei_recovers_planted_environments(relabel: str) -> None:
    backbone, train, truth = _planted()
    models = StackedEnvironmentModels(2, backbone, torch.zeros(16), k_f=8, init_std=0.01,
                               generator=torch.Generator().manual_seed(3))
    epochs, lr, n_neg = (10, 0.1, 16) if relabel == "score" else (15, 0.05, 32)
    cfg = EnvironmentsConfig(n_envs=2, max_iters=8, env_epochs=epochs, change_tol=0.01, relabel=relabel, lr=lr)
    result = identify_environments(models, train, cfg, batch_size=128, n_negatives=n_neg, seed=0)
    ari = adjusted_rand_index(truth, result.labels)
    assert ari > 0.8, (ari, result.churn, result.sizes)
    assert sum(result.sizes) == len(train) and len(result.churn) == result.iterations
    assert result.label_pairs is not None
    relabelled = result.label_pairs(train)  # the fitted models reproduce the labels (loss: other negatives)
    assert np.mean(relabelled == result.labels) > (0.999 if relabel == "score" else 0.9)


def test_hei_stops_when_labels_settle() -> None:
    backbone, train, truth = _planted()
    models = StackedEnvironmentModels(2, backbone, torch.zeros(16), k_f=8, generator=torch.Generator().manual_seed(3))
    cfg = EnvironmentsConfig(n_envs=2, max_iters=6, env_epochs=15, change_tol=0.5, lr=0.05)
    result = identify_environments(models, train, cfg, batch_size=128, n_negatives=8, seed=0,
                                   init_labels=truth)
    assert result.iterations == 1 and result.churn[0] <= 0.5


def _planted_hei(max_iters: int, criterion: Any = None) -> Any:
    """HEI on the sign-flip plant from a random start (its EM moves far from the start)."""
    backbone, train, _ = _planted()
    models = StackedEnvironmentModels(2, backbone, torch.zeros(16), k_f=8, generator=torch.Generator().manual_seed(3))
    cfg = EnvironmentsConfig(n_envs=2, max_iters=max_iters, env_epochs=10, change_tol=0.0, lr=0.1)
    return identify_environments(models, train, cfg, batch_size=128, n_negatives=16, seed=0, criterion=criterion)


def test_a_criterion_keeps_its_best_iterate_with_the_models_trained_on_it() -> None:
    """EM with a criterion returns the iterate the criterion scores highest, start included, and labels new pairs
    with the models trained on that iterate; where the last iterate is best it returns what EM without one does."""
    _, train, truth = _planted()
    plain = _planted_hei(4)
    start = torch.randint(2, (len(train),), generator=environments.seeded_generator(0, "hei_init", 0)).numpy()
    assert adjusted_rand_index(truth, plain.labels) > 0.5 > abs(adjusted_rand_index(truth, start))

    def prefers_the_start(labels: np.ndarray) -> float:
        return float(np.mean(labels == start))

    kept = _planted_hei(4, prefers_the_start)
    assert kept.kept_iteration == 0 and np.array_equal(kept.labels, start)
    assert len(kept.criterion) == kept.iterations + 1 and kept.criterion[0] == 1.0
    assert kept.sizes == np.bincount(start, minlength=2).tolist()
    trained_on_start = _planted_hei(1)  # the models after the first training pass, on the start
    assert kept.models is not None and trained_on_start.models is not None
    torch.testing.assert_close(kept.models.weight, trained_on_start.models.weight, rtol=0, atol=0)
    assert kept.label_pairs is not None and trained_on_start.label_pairs is not None
    assert np.array_equal(kept.label_pairs(train), trained_on_start.label_pairs(train))

    def prefers_the_truth(labels: np.ndarray) -> float:
        return abs(adjusted_rand_index(truth, labels))

    last = _planted_hei(4, prefers_the_truth)
    assert last.kept_iteration == last.iterations and np.array_equal(last.labels, plain.labels)
    assert plain.criterion == [] and plain.kept_iteration is None


def test_training_is_deterministic_and_sharding_invariant() -> None:
    backbone, train = _backbone()
    labels = np.arange(len(train)) % 2

    def run() -> torch.Tensor:
        models = StackedEnvironmentModels(2, backbone, torch.full((12,), 0.5), k_f=6,
                                   generator=torch.Generator().manual_seed(0))
        train_environment_models(models, train, labels, 2, 0.01, 32, 4, 0, (0, 0), LocalCollective())
        return models.weight.detach().clone()

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_adjusted_rand_index() -> None:
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)
    assert adjusted_rand_index(a, np.array([5, 5, 3, 3, 9, 9])) == pytest.approx(1.0)
    # Hubert & Arabie worked value (sklearn doc example): [0,0,1,1] vs [0,0,1,2] -> 0.5714...
    assert adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2])) == pytest.approx(0.5714285714)
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(rng.integers(0, 3, 5000), rng.integers(0, 3, 5000))) < 0.01


def _share_of_first_environment(labels: np.ndarray) -> float:
    return float(np.mean(labels == 0))


@pytest.mark.parametrize(("pool", "criterion"), [(0, None), (12, None), (0, _share_of_first_environment)])
def test_two_rank_hei_equals_single_process(pool: int, criterion: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels and weights agree at two ranks and one, with and without a criterion choosing EM's iterate."""
    torch.set_num_threads(1)
    monkeypatch.setattr(environments, "RELABEL_CHUNK", 97)  # several chunks, spread over both ranks
    backbone, train, _ = _planted()
    backbone = backbone.double()
    cfg = EnvironmentsConfig(n_envs=3, max_iters=2, env_epochs=2, change_tol=0.0, relabel="loss", lr=0.05,
                             input="invrl", l1_rho=0.3)

    def run(collective: Any) -> tuple[np.ndarray, torch.Tensor]:
        models = StackedEnvironmentModels(3, backbone, torch.full((16,), 0.3), k_f=8, input_mode="invrl", l1_rho=0.3,
                                   init_std=0.1, generator=torch.Generator().manual_seed(3)).double()
        result = identify_environments(models, train, cfg, batch_size=100, n_negatives=4, seed=0,
                                       collective=collective, negative_pool=pool, criterion=criterion)
        return result.labels, models.weight.detach().clone()

    single = run(LocalCollective())
    ranks = run_two_ranks(run)
    for labels, weight in ranks:
        np.testing.assert_array_equal(labels, single[0])
        torch.testing.assert_close(weight, single[1], rtol=1e-9, atol=1e-12)


def test_trainable_user_table_keeps_identifiable_environments_that_frozen_p_loses() -> None:
    """Training strengths (+2, -1) average out over the mixture, so the ERM-pretrained P carries no spurious
    taste: environment models on frozen P cannot express the environments and lose even the TRUE labels after
    one EM iteration; with a trained shared user table (environments.train_users) the true labels stay a fixed
    point. (Recovering them from a random start is a separate, unsolved problem.)"""
    from painvrl.config import DatasetConfig, SyntheticConfig
    from painvrl.data.synthetic import make_synthetic

    data = make_synthetic(DatasetConfig(synthetic=SyntheticConfig(
        n_users=300, n_items=400, train_env_strengths=[2.0, -1.0], train_env_shares=[], spurious_shared=0.0)))
    assert data.ground_truth is not None and data.ground_truth.invariant_dims is not None
    truth = data.ground_truth.train_env
    assert truth is not None
    pretrained = pretrained_backbone(data, k=16, epochs=10)
    mask = torch.as_tensor(data.ground_truth.invariant_dims.astype(np.float32))
    cfg = EnvironmentsConfig(max_iters=2, env_epochs=5)
    ari = {}
    for train_users in (False, True):
        models = StackedEnvironmentModels(2, pretrained, mask, k_f=16, generator=torch.Generator().manual_seed(0),
                                   train_users=train_users)
        assert len(models.trainable()) == 1 + train_users
        result = identify_environments(models, data.train, cfg, batch_size=256, n_negatives=10, seed=0,
                                       init_labels=truth)
        ari[train_users] = adjusted_rand_index(truth, result.labels)
    assert ari[True] > 0.4, ari
    assert ari[False] < 0.1, ari


def test_feature_bias_adds_a_global_item_term_on_every_scoring_path() -> None:
    """With x = [f ; 1]: score_k(u, i) = <P_u, [Q_i ; W_k x]> + b_k . x (a global item term b_k . f + c_k; W_k's
    constant column also gives each user an offset), the same through score_all, loss_all, the per-environment
    loss and the pooled batched loss; the L1 penalty never touches the constant column."""
    backbone, train = _backbone()
    mask = torch.full((12,), 0.3)
    models = StackedEnvironmentModels(2, backbone, mask, k_f=6, input_mode="invrl", l1_rho=0.2, init_std=0.5,
                               generator=torch.Generator().manual_seed(1), feature_bias=True)
    assert models.weight.shape == (2, 7, 13)
    users, pos = torch.as_tensor(train[:20, 0]), torch.as_tensor(train[:20, 1])
    x = torch.cat([backbone.features[pos], torch.ones(20, 1)], dim=1)  # invrl input [f ; 1]
    w = models.weight.detach()
    k_id = backbone.item_embedding.shape[1]
    for env in range(2):
        expected = ((backbone.user_embedding[users, :k_id] * backbone.item_embedding[pos]).sum(-1)
                    + (backbone.user_embedding[users, k_id:] * (x @ w[env, :6].T)).sum(-1)
                    + x @ w[env, 6]).detach()
        torch.testing.assert_close(models.score_all(users, pos)[:, env], expected, rtol=1e-5, atol=1e-6)
    gen = torch.Generator().manual_seed(4)
    envs = torch.randint(2, (20,), generator=gen)
    pools = torch.randint(50, (2, 7), generator=gen)
    positions = torch.randint(7, (20, 5), generator=gen)
    negs = torch.stack([pools[e][p] for e, p in zip(envs.tolist(), positions, strict=True)])
    own = models.example_losses(users, pos, negs, envs)
    torch.testing.assert_close(models.example_losses_pooled(users, pos, pools, positions, envs), own)
    torch.testing.assert_close(models.loss_all(users, pos, negs)[torch.arange(20), envs], own.detach())
    with torch.no_grad():
        models.weight[:, :, 12] += 5.0  # the intercept column
        l1 = models.penalty() - models.l2 * models.weight.pow(2).sum()
    assert float(l1) == pytest.approx(
        0.2 * float((w * torch.cat([mask, torch.zeros(1)])).abs().mean()), rel=1e-5)


def test_feature_bias_lets_hei_find_a_global_spurious_shift_from_a_random_start() -> None:
    """Everybody's clicks follow one spurious item direction, with strength +2 in one training environment and
    -1 in the other. Environment models that differ only through the user table's product cannot express "in
    this environment everybody clicks these items more", so EM from random labels stays random (ARI ~0);
    with environments.feature_bias the same EM climbs to the environments (ARI 0.70 here; 0.78 = the ideal
    latent classifier at the default size)."""
    from painvrl.config import DatasetConfig, SyntheticConfig
    from painvrl.data.synthetic import make_synthetic

    # warm IID: the data set the ARI figures above were measured on (EM from random labels is seed-sensitive:
    # with the default 15% held-out items this draw reaches ARI 0.11, the next data seed 0.84)
    data = make_synthetic(DatasetConfig(synthetic=SyntheticConfig(
        train_env_strengths=[2.0, -1.0], train_env_shares=[], spurious_shared=1.0, iid_new_items=0.0)))
    assert data.ground_truth is not None and data.ground_truth.train_env is not None
    truth = data.ground_truth.train_env
    pretrained = pretrained_backbone(data, k=16, epochs=10)
    mask = torch.full((data.feature_dim,), 0.5)
    cfg = EnvironmentsConfig(max_iters=10, env_epochs=5)
    ari = {}
    for feature_bias in (False, True):
        models = StackedEnvironmentModels(2, pretrained, mask, k_f=16, generator=torch.Generator().manual_seed(0),
                                   feature_bias=feature_bias)
        result = identify_environments(models, data.train, cfg, batch_size=1024, n_negatives=50, seed=0,
                                       negative_pool=512)
        ari[feature_bias] = adjusted_rand_index(truth, result.labels)
    assert ari[True] > 0.4, ari
    assert ari[False] < 0.1, ari
