"""Sparse graph building blocks shared by the graph backbones.

- :func:`bipartite_adjacency`: the user-item graph over the (n_users + n_items) square, symmetric
  (D^-1/2 A D^-1/2, LightGCN) or row (D^-1 A, mean aggregation) normalised, as a coalesced torch.sparse COO tensor
  (the models keep it as a :class:`painvrl.model.sparse.SparseMatrix`, CSR);
- :func:`propagate`: LightGCN propagation, the mean of the layer outputs E_0, A E_0, ..., A^L E_0;
- :func:`knn_neighbours` / :func:`knn_graph`: the top-k cosine item-item graph, built chunk by chunk so memory is
  O(items x k) (plus one [chunk, items] similarity block), never a dense items x items matrix;
- :func:`degree_sensitive_prune`: FREEDOM's degree-sensitive edge pruning of the user-item graph.

Every function works on the device of its inputs; nothing is moved to a hard-coded device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from painvrl.model.sparse import sparse_product


def bipartite_edges(train: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) training edges as node ids of the bipartite graph (items offset by ``n_users``)."""
    pairs = np.unique(np.asarray(train, dtype=np.int64).reshape(-1, 2), axis=0)
    return pairs[:, 0], pairs[:, 1] + n_users


def normalised_adjacency(rows: torch.Tensor, cols: torch.Tensor, n_nodes: int, norm: str = "sym",
                         values: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse [n_nodes, n_nodes] adjacency from directed edges (rows -> cols), normalised by node degree.

    ``norm="sym"``: D^-1/2 A D^-1/2 (degree = row sums); ``norm="row"``: D^-1 A (mean over neighbours);
    ``norm="none"``: A. Isolated nodes keep an all-zero row (no division by zero).
    """
    if values is None:
        values = torch.ones(rows.numel(), dtype=torch.float32, device=rows.device)
    degree = torch.zeros(n_nodes, dtype=values.dtype, device=values.device).index_add_(0, rows, values)
    if norm == "sym":
        inv = torch.where(degree > 0, degree.clamp_min(1e-12).rsqrt(), torch.zeros_like(degree))
        values = values * inv[rows] * inv[cols]
    elif norm == "row":
        inv = torch.where(degree > 0, 1.0 / degree.clamp_min(1e-12), torch.zeros_like(degree))
        values = values * inv[rows]
    elif norm != "none":
        raise ValueError(f"unknown normalisation {norm!r}")
    index = torch.stack([rows, cols])
    return torch.sparse_coo_tensor(index, values, (n_nodes, n_nodes), check_invariants=False).coalesce()


def bipartite_adjacency(train: np.ndarray, n_users: int, n_items: int, device: torch.device | str = "cpu",
                        norm: str = "sym") -> torch.Tensor:
    """The normalised user-item graph A = [[0, R], [R^T, 0]] over users then items (duplicate pairs count once)."""
    users, items = bipartite_edges(train, n_users)
    u = torch.as_tensor(users, device=device)
    i = torch.as_tensor(items, device=device)
    rows, cols = torch.cat([u, i]), torch.cat([i, u])
    return normalised_adjacency(rows, cols, n_users + n_items, norm)


def propagate(adjacency: torch.Tensor, embeddings: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN readout: mean of E_0, A E_0, ..., A^L E_0 (one sparse-dense product per layer).

    ``adjacency`` is symmetric (the user-item graph normalised with ``norm="sym"``), COO or CSR.
    """
    total = embeddings
    current = embeddings
    for _ in range(n_layers):
        current = sparse_product(adjacency, current)
        total = total + current
    return total / (n_layers + 1)


KNN_BLOCK_ELEMENTS = 1 << 26
"""At most this many similarity values per block of rows in :func:`knn_neighbours` (64M float32 = 256 MB)."""
KNN_BLOCK_ROWS = 256
"""At most this many rows per block: a block that stays in cache makes the search 1.7-2x faster at the TikTok
size (6.7k items) and costs the same at 76k items, with a 78 MB block there (benchmarks/bench_knn_blocks.py)."""


@torch.no_grad()
def knn_neighbours(x: torch.Tensor, k: int, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours of every row of ``x`` [n, d]: (indices [n, k], similarities [n, k]).

    The row itself is a candidate (its similarity is the largest, 1), as in the LATTICE / FREEDOM kNN graphs.
    Peak extra memory is one [chunk_size, n] similarity block (by default KNN_BLOCK_ROWS rows, fewer where that
    would exceed KNN_BLOCK_ELEMENTS) plus the O(n x k) result.
    """
    n = x.shape[0]
    k = min(k, n)
    chunk = chunk_size or max(1, min(KNN_BLOCK_ROWS, KNN_BLOCK_ELEMENTS // max(n, 1)))
    unit = F.normalize(x.to(torch.float32), dim=1)
    indices = torch.empty(n, k, dtype=torch.long, device=x.device)
    sims = torch.empty(n, k, dtype=torch.float32, device=x.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = unit[start:stop] @ unit.T
        top = torch.topk(block, k, dim=1)
        indices[start:stop] = top.indices
        sims[start:stop] = top.values
        del block
    return indices, sims


def knn_adjacency(indices: torch.Tensor, values: torch.Tensor | None = None, norm: str = "sym") -> torch.Tensor:
    """Sparse normalised [n, n] item-item graph from neighbour lists [n, k] (weights ``values`` or 1)."""
    n, k = indices.shape
    rows = torch.arange(n, device=indices.device).repeat_interleave(k)
    vals = None if values is None else values.reshape(-1)
    return normalised_adjacency(rows, indices.reshape(-1), n, norm, vals)


def knn_graph(x: torch.Tensor, k: int = 10, weighted: bool = False, chunk_size: int | None = None) -> torch.Tensor:
    """Symmetric-normalised top-k cosine item-item graph of ``x`` (binary edges, or cosine-weighted)."""
    indices, sims = knn_neighbours(x, k, chunk_size)
    return knn_adjacency(indices, sims if weighted else None)


def degree_sensitive_prune(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int,
                           keep_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the user-item edges kept by FREEDOM's degree-sensitive pruning.

    ``round(keep_ratio * |E|)`` edges are sampled without replacement with probability proportional to
    1 / (sqrt(d_u) sqrt(d_i)), so edges between high-degree nodes are pruned first. Sampling without replacement
    uses exponential keys (Efraimidis-Spirakis: the edges with the smallest Exp(1) / w), O(|E| log |E|).
    """
    n_keep = round(keep_ratio * users.numel())
    d_u = torch.bincount(users, minlength=n_users).to(torch.float32)
    d_i = torch.bincount(items, minlength=n_items).to(torch.float32)
    weight = (d_u[users] * d_i[items]).rsqrt()
    exp = torch.empty(users.numel(), device=users.device).exponential_(generator=generator)
    return torch.topk(exp / weight, n_keep, largest=False).indices


def symmetric_knn_weights(indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """D^-1/2 W D^-1/2 of a neighbour-list graph (row i links to ``indices[i]`` with ``weights[i]``, D the row
    sums), as weights of the same lists; differentiable in ``weights``. Negative similarities count as no edge."""
    weights = weights.clamp_min(0.0)
    degree = weights.sum(dim=1)
    inv = torch.where(degree > 0, degree.clamp_min(1e-12).rsqrt(), torch.zeros_like(degree))
    return weights * inv.unsqueeze(1) * inv[indices]
