from __future__ import annotations

import numpy as np
import torch
from backbone_helpers import tiny_context, train_steps

from painvrl.model.graphs import bipartite_adjacency
from painvrl.model.lightgcn import LightGCN


def test_scores_equal_dense_propagation() -> None:
    ctx = tiny_context()
    model = LightGCN.build(ctx)
    a = bipartite_adjacency(ctx.train, ctx.n_users, ctx.n_items).to_dense().double()
    e = model.embedding.detach().double()
    final = (e + a @ e + a @ a @ e + a @ a @ a @ e) / 4
    expected = final[: ctx.n_users] @ final[ctx.n_users:].T
    with torch.no_grad():
        got = model.ranking_scorer()(torch.arange(ctx.n_users))
    assert np.allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_loss_shape_and_training_drops() -> None:
    ctx = tiny_context()
    torch.manual_seed(0)
    model = LightGCN.build(ctx)
    out = model.per_interaction_loss(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.randint(0, 10, (3, 5)))
    assert out.shape == (3,)
    losses = train_steps(model, ctx)
    assert losses[-1] < 0.8 * losses[0]
    users, items = torch.tensor([0, 3]), torch.tensor([1, 2])
    with torch.no_grad():
        full = model.ranking_scorer()(users)
    assert torch.allclose(model.score_pairs(users, items).detach(), full[torch.arange(2), items], atol=1e-6)
