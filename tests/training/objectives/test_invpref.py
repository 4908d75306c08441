"""InvPref: the gradient reversal and the EM reassignment by hand, the batch loss against its terms written out
directly, data-parallel shards that sum to the whole batch, resume state, and the refusal of a graph backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from painvrl.config import load_config
from painvrl.config.ood_methods import InvPrefConfig
from painvrl.distributed.collective import LocalCollective
from painvrl.errors import PainvrlInputError
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights
from painvrl.training.checks import resolve_run
from painvrl.training.objectives.base import Batch, Objective
from painvrl.training.objectives.invpref import (
    InvPrefObjective,
    best_environments,
    environment_aware_loss,
    reverse_gradient,
)

rng = np.random.default_rng(0)
TRAIN = np.stack([rng.integers(0, 6, 24), rng.integers(0, 8, 24)], axis=1)
N_USERS, N_ITEMS, K_ID, K_F = 6, 8, 3, 3
L2 = 1e-2


def _model() -> UltraGCN:
    features = torch.from_numpy(np.random.default_rng(1).standard_normal((N_ITEMS, 6)).astype(np.float32))
    b_user, b_item = degree_weights(TRAIN, N_USERS, N_ITEMS)
    torch.manual_seed(0)
    return UltraGCN(N_USERS, N_ITEMS, features, FeatureProjection(6, K_F, 0.1), b_user, b_item, k_id=K_ID, k_f=K_F,
                    init_std=0.3, l2=L2)


def _objective(**settings: float) -> InvPrefObjective:
    cfg = InvPrefConfig(**settings)  # type: ignore[arg-type]
    return InvPrefObjective(TRAIN, N_USERS, N_ITEMS, K_ID + K_F, K_ID, cfg, L2, 0.5, 3, torch.device("cpu"))


def _batch(rows: torch.Tensor, global_size: int, world_size: int, pooled: bool = False) -> Batch:
    users, items = torch.from_numpy(TRAIN[:, 0])[rows], torch.from_numpy(TRAIN[:, 1])[rows]
    if not pooled:
        return Batch(rows, users, items, (items.unsqueeze(1) + torch.tensor([1, 3])) % N_ITEMS, global_size,
                     world_size)
    pool = torch.tensor([5, 2, 7, 0, 4])
    positions = torch.stack([rows % 5, (rows * 3 + 1) % 5], dim=1)
    return Batch(rows, users, items, pool[positions], global_size, world_size, pool, positions)


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def test_gradient_reversal_flips_the_classifier_gradient_into_the_invariant_vectors() -> None:
    # One example, two environments, W = [[1, 0], [0, 2]], b = 0, z = (1, 1): logits (1, 2), label 0.
    objective = InvPrefObjective(TRAIN, N_USERS, N_ITEMS, 2, K_ID, InvPrefConfig(reversal=0.5), L2, 0.5, 3,
                                 torch.device("cpu"))
    with torch.no_grad():
        objective.classifier.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    z = torch.ones(1, 2, requires_grad=True)
    loss = objective.classifier_terms(z, torch.tensor([0]))
    loss.sum().backward()
    p0, p1 = 1 / (1 + math.e), math.e / (1 + math.e)  # softmax of (1, 2)
    assert float(loss.detach()) == pytest.approx(-math.log(p0))
    # dL/dz = W^T (p - y) = (p0 - 1, 2 p1); the reversal hands z -0.5 times it ...
    assert z.grad is not None
    assert z.grad[0].tolist() == pytest.approx([-0.5 * (p0 - 1), -0.5 * 2 * p1])
    # ... while the classifier itself descends its own loss: dL/dW = (p - y) z^T.
    assert objective.classifier.grad is not None
    assert objective.classifier.grad.flatten().tolist() == pytest.approx([p0 - 1, p0 - 1, p1, p1])
    x = torch.tensor([2.0, -1.0], requires_grad=True)
    reverse_gradient(x, 3.0).pow(2).sum().backward()
    assert x.grad is not None and x.grad.tolist() == pytest.approx([-12.0, 6.0])


def test_the_reassignment_picks_the_environment_with_the_lowest_variant_loss() -> None:
    # t_0 = (1, 0), t_1 = (0, 1): g = (phi * v) itself, and softplus(-g) is lowest where g is highest.
    env_embedding = torch.eye(2)
    user_variant = torch.tensor([[2.0, 1.0], [1.0, 1.0], [1.0, 2.0], [1.0, 1.0]])
    item_variant = torch.tensor([[1.0, 1.0], [0.5, 3.0], [-1.0, 0.5], [2.0, 2.0]])
    # products (2, 1), (0.5, 3), (-1, 1), (2, 2): env 0, env 1, env 1, a tie that goes to env 0.
    assert best_environments(user_variant, item_variant, env_embedding).tolist() == [0, 1, 1, 0]

    objective = _objective(n_envs=3)
    with torch.no_grad():
        objective.user_variant.zero_()
        objective.user_variant[:, 0] = 1.0
        objective.item_variant.zero_()
        objective.item_variant[:, 0] = torch.arange(N_ITEMS, dtype=torch.float32) - 4  # g_e = (i - 4) t_e0
        objective.env_embedding.zero_()
        objective.env_embedding[:, 0] = torch.tensor([-1.0, 0.0, 1.0])
    start = objective.envs.clone()
    moved = objective.reassign()
    expected = torch.where(torch.from_numpy(TRAIN[:, 1]) > 4, 2, 0)  # item 4: g = 0 everywhere, a tie -> env 0
    assert objective.envs.tolist() == expected.tolist()
    assert moved == int((start != expected).sum()) and objective.reassigned == [moved]
    assert objective.summary()["environment_sizes"] == torch.bincount(expected, minlength=3).tolist()


def test_the_reassignment_runs_every_reassign_every_epochs() -> None:
    objective = _objective(reassign_every=2)
    for epoch in range(5):
        objective.start_epoch(epoch)
    assert len(objective.reassigned) == 2  # epochs 2 and 4


@pytest.mark.parametrize("pooled", [False, True])
def test_the_batch_loss_is_its_terms_written_out(pooled: bool) -> None:
    model, objective = _model(), _objective(variant_weight=0.7, classifier_weight=1.3, reversal=2.0)
    rows = torch.arange(24)
    batch = _batch(rows, 24, 1, pooled)
    loss = objective.batch_loss(model, batch, LocalCollective())

    u, i, negatives = batch.users, batch.pos_items, batch.neg_items
    assert batch.pool is None or negatives.shape[1] == 2
    p, q = model.user_embedding[u], model.item_vectors(i)
    f_pos = (p * q).sum(-1)
    f_neg = torch.stack([(p * model.item_vectors(negatives[:, j])).sum(-1) for j in range(2)], dim=1)
    invariant = model.scores_loss(u, i, f_pos, negatives, f_neg).sum() \
        + L2 * (p.pow(2).sum() + model.item_embedding[i].pow(2).sum())
    envs = objective.envs[rows]
    phi, t, v = objective.user_variant[u], objective.env_embedding[envs], objective.item_variant
    # The environment-aware term's negatives: each example's own, or the head of the shared pool.
    variant_negatives = negatives if batch.pool is None else batch.pool[:2].expand(24, 2)
    f_var_neg = f_neg if batch.pool is None else torch.stack(
        [(p * model.item_vectors(variant_negatives[:, j])).sum(-1) for j in range(2)], dim=1)
    g_pos = (phi * t * v[i]).sum(-1)
    g_neg = torch.stack([(phi * t * v[variant_negatives[:, j]]).sum(-1) for j in range(2)], dim=1)
    y_pos = torch.sigmoid(f_pos) * torch.sigmoid(g_pos)
    y_neg = torch.sigmoid(f_var_neg) * torch.sigmoid(g_neg)
    variant = -(torch.log(y_pos) + torch.log(1 - y_neg).mean(1)).sum()
    variant_reg = L2 * (phi.pow(2).sum() + v[i].pow(2).sum())
    logits = (p * q) @ objective.classifier.T + objective.classifier_bias
    classifier = -torch.log_softmax(logits, 1)[torch.arange(24), envs].sum()
    expected = (invariant + 0.7 * variant + variant_reg + 1.3 * classifier) / 24 + model.shared_regularisation()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # With both weights at 0 only the variant embeddings' L2 separates the loss from ERM's.
    silent = _objective(variant_weight=0.0, classifier_weight=0.0)
    erm = Objective().batch_loss(model, batch, LocalCollective())
    phi0 = silent.user_variant[u]
    reg = L2 * (phi0.pow(2).sum() + silent.item_variant[i].pow(2).sum()) / 24
    quiet = silent.batch_loss(model, batch, LocalCollective())
    assert float(quiet.detach()) == pytest.approx(float((erm + reg).detach()), rel=1e-5)


@pytest.mark.parametrize("pooled", [False, True])
def test_two_shards_sum_to_the_whole_batch_gradient(pooled: bool) -> None:
    model, objective = _model(), _objective(variant_weight=0.7, classifier_weight=1.3)
    params = list(model.parameters()) + objective.parameters()
    objective.batch_loss(model, _batch(torch.arange(24), 24, 1, pooled), LocalCollective()).backward()
    expected = _grads(params)
    for param in params:
        param.grad = None
    for rows in (torch.arange(0, 11), torch.arange(11, 24)):
        objective.batch_loss(model, _batch(rows, 24, 2, pooled), LocalCollective()).backward()
    for mine, theirs in zip(_grads(params), expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-7)


def test_the_state_resumes_parameters_and_assignment() -> None:
    trained = _objective()
    with torch.no_grad():
        trained.env_embedding.add_(1.0)
    trained.reassign()
    resumed = _objective()
    env_embedding = resumed.env_embedding
    resumed.load_state_dict(trained.state_dict())
    assert resumed.env_embedding is env_embedding  # in place: the optimiser keeps its parameters
    torch.testing.assert_close(resumed.env_embedding, trained.env_embedding)
    assert resumed.envs.tolist() == trained.envs.tolist() and resumed.reassigned == trained.reassigned


def test_the_start_is_seeded_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    first, second = _objective(), _objective()
    assert torch.rand(1).item() == before.item()
    torch.testing.assert_close(first.user_variant, second.user_variant)
    assert first.envs.tolist() == second.envs.tolist() and len(set(first.envs.tolist())) == 2


def test_a_graph_backbone_is_refused_by_name() -> None:
    with pytest.raises(PainvrlInputError, match=r"model\.name.*invpref.*'freedom'"):
        resolve_run(load_config(None, ["model.name=freedom", "method=invpref"]))
    assert resolve_run(load_config(None, ["model.name=vbpr", "method=invpref"])).method.needs_mf_backbone


@pytest.mark.parametrize(("field", "value"), [("n_envs", "1"), ("reassign_every", "0"), ("variant_weight", "-1"),
                                              ("classifier_weight", "-0.5"), ("reversal", "-1")])
def test_out_of_range_settings_name_their_field(field: str, value: str) -> None:
    with pytest.raises(PainvrlInputError, match=rf"invpref\.{field}"):
        load_config(None, [f"invpref.{field}={value}"])


def test_the_environment_aware_loss_is_finite_where_both_logits_saturate() -> None:
    # A negative with f = g = 60: 1 - y = sigma(-60) + sigma(60) sigma(-60) ~ 2 e^-60, far below float32's eps.
    big = torch.full((1, 1), 60.0, requires_grad=True)
    loss = environment_aware_loss(torch.tensor([60.0]), big, torch.tensor([60.0]), big)
    assert float(loss.detach()) == pytest.approx(60.0 - math.log(2.0), rel=1e-5)
    loss.sum().backward()
    assert big.grad is not None and torch.isfinite(big.grad).all()
