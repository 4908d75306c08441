"""Products over neighbour-list graphs whose values change at every step (LATTICE's learned item graph, the
kNN item graphs), computed as CSR products.

A graph of ``[n, k]`` neighbour lists (row i links to ``indices[i]``) has a fixed sparsity pattern while its
values (similarities, normalised weights) carry gradients. Gathering ``x[indices]`` and scattering its
gradient back costs an ``[n, k, dim]`` copy and a serial scatter-add per product; :class:`NeighbourLists` keeps
the CSR pattern of the graph and of its transpose, so the forward product and the backward products with
respect to the dense operand are CSR products. Under ``create_graph`` (penalties that differentiate a gradient)
the backward falls back to differentiable gathers.
"""

from __future__ import annotations

from typing import Any

import torch

from painvrl.model.sparse import without_csr_notice


class NeighbourLists:
    """``[n, k]`` neighbour lists with the CSR patterns of their graph and its transpose."""

    def __init__(self, indices: torch.Tensor) -> None:
        n, k = indices.shape
        device = indices.device
        self.indices = indices
        self.columns = indices.reshape(-1)
        self.row_starts = torch.arange(0, n * k + 1, k, device=device)
        self.order = torch.argsort(self.columns, stable=True)
        """Positions of the flattened lists in column order: the values of the transpose are values[order]."""
        self.transpose_starts = torch.zeros(n + 1, dtype=torch.long, device=device)
        self.transpose_starts[1:] = torch.bincount(self.columns, minlength=n).cumsum(0)
        self.transpose_columns = torch.arange(n, device=device).repeat_interleave(k)[self.order]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.indices.shape[0]), int(self.indices.shape[0])

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The graph with ``values`` [n, k] as CSR: row i holds values[i] at columns indices[i]."""
        with without_csr_notice():
            return torch.sparse_csr_tensor(self.row_starts, self.columns, values.reshape(-1).contiguous(),
                                           self.shape, check_invariants=False)

    def transpose(self, values: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`matrix` as CSR."""
        with without_csr_notice():
            return torch.sparse_csr_tensor(self.transpose_starts, self.transpose_columns,
                                           values.reshape(-1)[self.order].contiguous(), self.shape,
                                           check_invariants=False)


def _scatter_rows(lists: NeighbourLists, rows: torch.Tensor) -> torch.Tensor:
    """sum over (i, j) of rows[i, j] into row indices[i, j]: rows [n, k, dim] -> [n, dim], differentiable."""
    n, k = lists.indices.shape
    out = torch.zeros(n, rows.shape[-1], dtype=rows.dtype, device=rows.device)
    return out.index_add(0, lists.columns, rows.reshape(n * k, -1))


class _PairDots(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, lists: NeighbourLists, u: torch.Tensor) -> torch.Tensor:
        ctx.lists = lists
        ctx.save_for_backward(u)
        return torch.bmm(u[lists.indices], u.unsqueeze(2)).squeeze(2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (u,) = ctx.saved_tensors
        lists: NeighbourLists = ctx.lists
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            rows = grad.unsqueeze(2) * u[lists.indices]
            return None, rows.sum(1) + _scatter_rows(lists, grad.unsqueeze(2) * u.unsqueeze(1))
        grad = grad.to(u.dtype)
        return None, torch.sparse.mm(lists.matrix(grad), u) + torch.sparse.mm(lists.transpose(grad), u)


def pair_dots(lists: NeighbourLists, u: torch.Tensor) -> torch.Tensor:
    """[n, k] inner products <u_i, u_j> of every row i with its listed neighbours j, differentiable in ``u``."""
    return _PairDots.apply(lists, u)


class _ListProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, lists: NeighbourLists, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.lists = lists
        ctx.save_for_backward(weights, x)
        return torch.sparse.mm(lists.matrix(weights), x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        weights, x = ctx.saved_tensors
        lists: NeighbourLists = ctx.lists
        grad_weights = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_weights = torch.bmm(x[lists.indices], grad.unsqueeze(2)).squeeze(2)
        if ctx.needs_input_grad[2]:
            if torch.is_grad_enabled():  # create_graph: a differentiable backward
                grad_x = _scatter_rows(lists, weights.unsqueeze(2) * grad.unsqueeze(1))
            else:
                grad_x = torch.sparse.mm(lists.transpose(weights), grad)
        return None, grad_weights, grad_x


def neighbour_sum(lists: NeighbourLists, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(W x)_i = sum_j weights[i, j] x[indices[i, j]]: one propagation step over a neighbour-list graph
    ([n, k] lists, x [n, dim]); differentiable in ``weights`` and ``x``, memory O(n k + n dim)."""
    return _ListProduct.apply(lists, weights.to(x.dtype), x)
