"""Neighbour-list products as CSR equal their dense references, in value, gradient and gradient of gradient."""

from __future__ import annotations

import torch

from painvrl.model.neighbour_lists import NeighbourLists, neighbour_sum, pair_dots


def _lists(n: int = 7, k: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lists = torch.randint(0, n, (n, k), generator=g)
    lists[0, :2] = 4  # a repeated neighbour (FREEDOM concatenates one list per modality)
    return lists


def _dense(indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    n = indices.shape[0]
    return torch.zeros(n, n, dtype=values.dtype).index_put((torch.arange(n).repeat_interleave(indices.shape[1]),
                                                           indices.reshape(-1)), values.reshape(-1), accumulate=True)


def test_the_patterns_are_the_graph_and_its_transpose() -> None:
    indices = _lists()
    values = torch.rand(indices.shape, dtype=torch.float64)
    lists = NeighbourLists(indices)
    dense = _dense(indices, values)
    torch.testing.assert_close(lists.matrix(values).to_dense(), dense)
    torch.testing.assert_close(lists.transpose(values).to_dense(), dense.T)


def test_neighbour_sum_equals_the_dense_product_with_gradients() -> None:
    indices = _lists()
    weights = torch.rand(indices.shape, dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    out = neighbour_sum(NeighbourLists(indices), weights, x)
    reference = _dense(indices, weights) @ x
    torch.testing.assert_close(out, reference)
    upstream = torch.randn(7, 4, dtype=torch.float64)
    ours = torch.autograd.grad(out, (weights, x), upstream)
    theirs = torch.autograd.grad(reference, (weights, x), upstream)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    lists = NeighbourLists(indices)
    assert torch.autograd.gradcheck(lambda w, v: neighbour_sum(lists, w, v), (weights, x))


def test_pair_dots_equal_brute_force_with_gradients() -> None:
    indices = _lists()
    u = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    out = pair_dots(NeighbourLists(indices), u)
    reference = (u @ u.T).gather(1, indices)
    torch.testing.assert_close(out, reference)
    assert torch.autograd.gradcheck(lambda v: pair_dots(NeighbourLists(indices), v), (u,))


def test_a_gradient_of_a_gradient_equals_the_dense_one() -> None:
    """Penalties such as gradvar differentiate a parameter gradient: the backward is differentiable."""
    indices = _lists()
    lists = NeighbourLists(indices)
    w_proj = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    features = torch.randn(7, 5, dtype=torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64)

    def loss(dense: bool) -> torch.Tensor:
        content = features @ w_proj
        if dense:
            sims = (content @ content.T).gather(1, indices)
            h = _dense(indices, sims) @ x
        else:
            sims = pair_dots(lists, content)
            h = neighbour_sum(lists, sims, x)
        return h.pow(2).sum()

    second = []
    for dense in (False, True):
        (grad,) = torch.autograd.grad(loss(dense), w_proj, create_graph=True)
        (twice,) = torch.autograd.grad(grad.pow(2).sum(), w_proj)
        second.append((grad.detach(), twice))
    torch.testing.assert_close(second[0][0], second[1][0])
    torch.testing.assert_close(second[0][1], second[1][1])
    x.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda v: neighbour_sum(lists, pair_dots(lists, v), v), (x,))
