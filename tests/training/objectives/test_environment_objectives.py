"""GroupDRO and V-REx: hand-computed weight updates and coefficients, gradients equal to autograd of the
objective written out directly, and data-parallel shards whose gradients sum to the whole batch's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from painvrl.distributed.collective import LocalCollective
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights
from painvrl.training.objectives.base import Batch
from painvrl.training.objectives.environments import (
    GroupDROObjective,
    VREXObjective,
    dro_update,
    vrex_coefficients,
)

rng = np.random.default_rng(0)
TRAIN = np.stack([rng.integers(0, 6, 24), rng.integers(0, 8, 24)], axis=1)
LABELS = np.array([0, 1, 2] * 8)
N_USERS, N_ITEMS = 6, 8


def test_dro_update_by_hand() -> None:
    weights = dro_update(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 2.0]), torch.tensor([True, True]), 1.0)
    e = math.e
    assert weights.tolist() == pytest.approx([1 / (1 + e), e / (1 + e)])
    # An environment absent from the batch keeps its share of the log-weights.
    weights = dro_update(torch.tensor([0.25, 0.25, 0.5]), torch.tensor([1.0, 0.0, 0.0]),
                         torch.tensor([True, False, True]), math.log(2.0))
    assert weights.tolist() == pytest.approx([0.5 / 1.25, 0.25 / 1.25, 0.5 / 1.25])


def test_vrex_coefficients_by_hand() -> None:
    coefficients, value = vrex_coefficients(torch.tensor([1.0, 3.0, 7.0]), torch.tensor([True, True, False]), 1.0)
    # mean 2, variance 1 -> 3; dObjective/dL = 1/2 + 2/2 * (L - 2) over the present ones, 0 for the absent one.
    assert value == pytest.approx(3.0)
    assert coefficients.tolist() == pytest.approx([-0.5, 1.5, 0.0])


def _model() -> UltraGCN:
    features = torch.from_numpy(np.random.default_rng(1).standard_normal((N_ITEMS, 6)).astype(np.float32))
    b_user, b_item = degree_weights(TRAIN, N_USERS, N_ITEMS)
    torch.manual_seed(0)
    return UltraGCN(N_USERS, N_ITEMS, features, FeatureProjection(6, 3, 0.1), b_user, b_item, k_id=3, k_f=3,
                    init_std=0.1)


def _batch(rows: torch.Tensor, global_size: int, world_size: int) -> Batch:
    users, items = torch.from_numpy(TRAIN[:, 0])[rows], torch.from_numpy(TRAIN[:, 1])[rows]
    negatives = (items.unsqueeze(1) + torch.tensor([1, 3])) % N_ITEMS
    return Batch(rows, users, items, negatives, global_size, world_size)


def _grads(model: UltraGCN) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _direct_objective(model: UltraGCN, batch: Batch, combine: object) -> torch.Tensor:
    per_example, example_reg = model.loss_terms(batch.users, batch.pos_items, batch.neg_items)
    envs = torch.from_numpy(LABELS)[batch.rows]
    losses = torch.stack([per_example[envs == e].mean() for e in range(3)])
    assert callable(combine)
    return combine(losses) + example_reg / batch.global_size + model.shared_regularisation()


def test_vrex_gradient_is_the_objectives_gradient() -> None:
    model, batch = _model(), _batch(torch.arange(24), 24, 1)
    objective = VREXObjective(LABELS, 3, torch.device("cpu"), weight=2.0, warmup_epochs=0)
    loss = objective.batch_loss(model, batch, LocalCollective())
    loss.backward()
    ours = _grads(model)
    model.zero_grad()
    direct = _direct_objective(model, batch, lambda L: L.mean() + 2.0 * (L - L.mean()).pow(2).mean())
    direct.backward()
    assert float(loss.detach()) == pytest.approx(float(direct.detach()), rel=1e-5)
    for mine, theirs in zip(ours, _grads(model), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-7)


def test_vrex_warmup_trains_the_plain_mean_first() -> None:
    objective = VREXObjective(LABELS, 3, torch.device("cpu"), weight=5.0, warmup_epochs=2)
    objective.start_epoch(1)
    assert objective.current_weight == 0.0
    objective.start_epoch(2)
    assert objective.current_weight == 5.0


def test_dro_steps_on_the_updated_weights() -> None:
    model, batch = _model(), _batch(torch.arange(24), 24, 1)
    objective = GroupDROObjective(LABELS, 3, torch.device("cpu"), step_size=0.5)
    loss = objective.batch_loss(model, batch, LocalCollective())
    with torch.no_grad():
        per_example, _ = model.loss_terms(batch.users, batch.pos_items, batch.neg_items)
        envs = torch.from_numpy(LABELS)
        losses = torch.stack([per_example[envs == e].mean() for e in range(3)])
    expected_weights = torch.softmax(0.5 * losses, 0)
    torch.testing.assert_close(objective.weights, expected_weights)
    direct = _direct_objective(model, batch, lambda L: (expected_weights * L).sum())
    assert float(loss.detach()) == pytest.approx(float(direct.detach()), rel=1e-5)
    assert objective.summary()["environment_weights"] == pytest.approx(expected_weights.tolist())


class TwoShards(LocalCollective):
    """The arithmetic of an all-reduce over two ranks, run in one process: each shard's call is answered with the
    sum of both shards' tensors (the other shard's tensor is computed first with the same code)."""

    def __init__(self, other: torch.Tensor | None) -> None:
        self.other = other
        self.seen: torch.Tensor | None = None

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        self.seen = tensor.detach().clone()
        return tensor if self.other is None else tensor + self.other


@pytest.mark.parametrize("kind", ["dro", "vrex"])
def test_two_shards_sum_to_the_whole_batch_gradient(kind: str) -> None:
    def make() -> GroupDROObjective | VREXObjective:
        if kind == "dro":
            return GroupDROObjective(LABELS, 3, torch.device("cpu"), step_size=0.3)
        return VREXObjective(LABELS, 3, torch.device("cpu"), weight=1.5, warmup_epochs=0)

    model = _model()
    whole = make()
    whole.batch_loss(model, _batch(torch.arange(24), 24, 1), LocalCollective()).backward()
    expected = _grads(model)
    halves = [torch.arange(0, 11), torch.arange(11, 24)]
    # What each shard contributes to the all-reduce (detached sums and counts).
    probe = [TwoShards(None) for _ in halves]
    for collective, rows in zip(probe, halves, strict=True):
        make().batch_loss(model, _batch(rows, 24, 2), collective)
    model.zero_grad()
    for index, rows in enumerate(halves):
        other = probe[1 - index].seen
        make().batch_loss(model, _batch(rows, 24, 2), TwoShards(other)).backward()
    for mine, theirs in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-7)
