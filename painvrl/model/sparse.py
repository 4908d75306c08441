"""Constant sparse matrices (the user-item graphs) as CSR, multiplied with a cheap backward.

Autograd's own backward of ``torch.sparse.mm(A, x)`` transposes and re-sorts ``A`` at every step. A graph that
takes no gradient is better kept in CSR together with its transpose (the graph itself when it is symmetric):
forward and backward are then one CSR product each, several times faster on CPU. :class:`SparseMatrix` holds
the CSR arrays as module buffers, because torch can move and cast but not deep-copy a CSR tensor.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def without_csr_notice() -> Iterator[None]:
    """Silence torch's beta-status notice for CSR tensors: it is not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def to_csr(matrix: torch.Tensor) -> torch.Tensor:
    """The sparse matrix in CSR layout."""
    if matrix.layout == torch.sparse_csr:
        return matrix
    with without_csr_notice():
        return matrix.coalesce().to_sparse_csr()


class _ConstantSparseProduct(torch.autograd.Function):
    """``matrix @ x`` for a constant sparse matrix, with d/dx = ``transpose @ grad`` from a stored transpose."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, matrix: torch.Tensor, transpose: torch.Tensor,
                x: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose  # type: ignore[attr-defined]
        return torch.sparse.mm(matrix, x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, torch.sparse.mm(ctx.transpose, grad)  # type: ignore[attr-defined]


def sparse_product(matrix: torch.Tensor, x: torch.Tensor, transpose: torch.Tensor | None = None) -> torch.Tensor:
    """``matrix @ x`` for a sparse matrix that takes no gradient; ``transpose`` is its transpose (None: symmetric).

    A matrix that requires grad goes through ``torch.sparse.mm`` and autograd unchanged.
    """
    if matrix.requires_grad:
        return torch.sparse.mm(matrix, x)
    return _ConstantSparseProduct.apply(matrix, matrix if transpose is None else transpose, x)


class SparseMatrix(nn.Module):
    """A constant sparse matrix as CSR buffers (and its transpose's unless ``symmetric``); call it on ``x``."""

    def __init__(self, matrix: torch.Tensor, symmetric: bool) -> None:
        super().__init__()
        self.shape = tuple(matrix.shape)
        self._register("", to_csr(matrix))
        self.symmetric = symmetric
        if not symmetric:
            self._register("t_", to_csr(matrix.t()))

    def _register(self, prefix: str, csr: torch.Tensor) -> None:
        self.register_buffer(prefix + "crow", csr.crow_indices(), persistent=False)
        self.register_buffer(prefix + "col", csr.col_indices(), persistent=False)
        self.register_buffer(prefix + "values", csr.values(), persistent=False)

    def _csr(self, prefix: str, shape: tuple[int, ...]) -> torch.Tensor:
        crow, col, values = (getattr(self, prefix + part) for part in ("crow", "col", "values"))
        with without_csr_notice():
            return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)

    def matrix(self) -> torch.Tensor:
        """The matrix as a CSR tensor over the buffers (no copy)."""
        return self._csr("", self.shape)

    def transpose(self) -> torch.Tensor:
        """Its transpose as a CSR tensor (the matrix itself when symmetric)."""
        return self.matrix() if self.symmetric else self._csr("t_", self.shape[::-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_product(self.matrix(), x, None if self.symmetric else self.transpose())
