"""Constant sparse products against dense references and autograd."""

from __future__ import annotations

import copy

import torch

from painvrl.model.sparse import SparseMatrix, sparse_product, to_csr


def test_sparse_product_gradient_uses_the_transpose_and_matches_autograd() -> None:
    torch.manual_seed(0)
    dense = torch.rand(6, 6) * (torch.rand(6, 6) > 0.5)  # not symmetric
    coo = dense.to_sparse()
    x = torch.randn(6, 3, requires_grad=True)
    reference = torch.sparse.mm(coo, x)
    (reference * torch.arange(18.0).view(6, 3)).sum().backward()
    assert x.grad is not None
    expected_grad = x.grad.clone()
    x.grad = None
    got = sparse_product(to_csr(coo), x, to_csr(coo.t()))
    (got * torch.arange(18.0).view(6, 3)).sum().backward()
    torch.testing.assert_close(got, reference)
    torch.testing.assert_close(x.grad, expected_grad)
    symmetric = to_csr((dense + dense.t()).to_sparse())
    y = torch.randn(6, 3, requires_grad=True)
    sparse_product(symmetric, y).sum().backward()
    torch.testing.assert_close(y.grad, (dense + dense.t()) @ torch.ones(6, 3))


def test_sparse_matrix_survives_deepcopy_and_casts_and_backpropagates_through_its_transpose() -> None:
    torch.manual_seed(1)
    dense = torch.rand(5, 7) * (torch.rand(5, 7) > 0.4)
    square = torch.zeros(12, 12)
    square[:5, 5:] = dense  # not symmetric: only the upper-right block
    module = copy.deepcopy(SparseMatrix(square.to_sparse(), symmetric=False)).double()
    x = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    out = module(x)
    torch.testing.assert_close(out, square.double() @ x.detach())
    out.sum().backward()
    torch.testing.assert_close(x.grad, square.double().t() @ torch.ones(12, 2, dtype=torch.float64))
    assert module.matrix().layout == torch.sparse_csr
