"""Graph helpers against dense / brute-force references."""

from __future__ import annotations

import numpy as np
import torch

from painvrl.model.graphs import (
    bipartite_adjacency,
    degree_sensitive_prune,
    knn_graph,
    knn_neighbours,
    propagate,
)
from painvrl.model.sparse import to_csr


def _dense_bipartite(train: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    a = np.zeros((n_users + n_items,) * 2)
    for u, i in train:
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
    return inv[:, None] * a * inv[None, :]


TRAIN_5X4 = np.array([[0, 0], [0, 1], [1, 1], [2, 2], [2, 3], [3, 0], [3, 3], [4, 2], [0, 1]])


def test_bipartite_adjacency_5x4_equals_dense() -> None:
    adj = bipartite_adjacency(TRAIN_5X4, 5, 4)
    assert np.allclose(adj.to_dense().numpy(), _dense_bipartite(TRAIN_5X4, 5, 4), atol=1e-6)


def test_lightgcn_propagation_5x4_equals_dense_reference() -> None:
    rng = np.random.default_rng(0)
    e0 = rng.normal(size=(9, 3))
    a = _dense_bipartite(TRAIN_5X4, 5, 4)
    expected = (e0 + a @ e0 + a @ a @ e0 + a @ a @ a @ e0) / 4
    got = propagate(bipartite_adjacency(TRAIN_5X4, 5, 4), torch.tensor(e0, dtype=torch.float32), 3)
    assert np.allclose(got.numpy(), expected, atol=1e-5)


def test_knn_on_6_items_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    k = 3
    brute = np.argsort(-sim, axis=1)[:, :k]
    idx, vals = knn_neighbours(torch.tensor(x), k, chunk_size=4)  # two chunks
    assert np.array_equal(np.sort(idx.numpy(), 1), np.sort(brute, 1))
    assert np.allclose(vals.numpy(), np.take_along_axis(sim, brute, 1), atol=1e-5)
    a = np.zeros((6, 6))
    np.put_along_axis(a, brute, 1.0, axis=1)
    d = a.sum(1)
    dense = a / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
    assert np.allclose(knn_graph(torch.tensor(x), k, chunk_size=2).to_dense().numpy(), dense, atol=1e-6)


def test_degree_sensitive_prune_keeps_low_degree_edges() -> None:
    # user 0 links to every item (high degree); user 1 only to item 3 and user 2 only to item 4 (low degree).
    users = torch.tensor([0, 0, 0, 0, 0, 1, 2])
    items = torch.tensor([0, 1, 2, 3, 4, 3, 4])
    counts = torch.zeros(7)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        kept = degree_sensitive_prune(users, items, 3, 5, keep_ratio=3 / 7, generator=gen)
        assert kept.numel() == 3 and kept.unique().numel() == 3
        counts[kept] += 1
    # weights 1/sqrt(d_u d_i): (0,0..2): 1/sqrt5, (0,3),(0,4): 1/sqrt10, (1,3),(2,4): 1/sqrt2
    assert counts[5] > counts[0] and counts[6] > counts[1] and counts[0] > counts[3]
    # a single kept edge out of two is the lower-degree one in proportion w / sum(w)
    kept_one = [int(degree_sensitive_prune(torch.tensor([0, 1]), torch.tensor([0, 0]), 2, 1, 0.5,
                                           generator=gen)) for _ in range(2000)]
    assert abs(np.mean(kept_one) - 0.5) < 0.05  # equal degrees -> equal odds


def test_propagate_over_csr_equals_dense_with_gradients() -> None:
    adjacency = bipartite_adjacency(TRAIN_5X4, 5, 4)
    dense = adjacency.to_dense()
    e0 = torch.randn(9, 4, dtype=torch.float32)
    e_dense = e0.clone().requires_grad_(True)
    layers = [e_dense]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    expected = torch.stack(layers).mean(0)
    expected.pow(2).sum().backward()
    e = e0.clone().requires_grad_(True)
    got = propagate(to_csr(adjacency), e, 3)
    got.pow(2).sum().backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(e.grad, e_dense.grad)
