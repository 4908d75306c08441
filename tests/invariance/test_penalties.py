"""Tests for painvrl.invariance.penalties: gradvar, IRMv1 and V-REx."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from painvrl.invariance.penalties import (
    PENALTIES,
    Penalty,
    PenaltyInputs,
    gradient_variance,
    gradvar_penalty,
    masked_variance_penalty,
    per_env_param_grads,
    vrex_penalty,
)
from painvrl.model.gates import StochasticGate

# ---------------------------------------------------------------------------------------------- gradvar


def test_gradvar_hand_computed() -> None:
    env_grads = torch.tensor([[[1.0, 2.0]], [[3.0, 2.0]]])  # E=2, r=1, c=2
    # mean (2, 2); V = ((1-2)^2 + (3-2)^2, 0) = (2, 0); scaled (2 * 0.5, 0) -> squared sum 1
    assert torch.allclose(gradient_variance(env_grads), torch.tensor([[2.0, 0.0]]))
    assert gradvar_penalty(env_grads, torch.tensor([0.5, 1.0])).item() == pytest.approx(1.0)
    # three environments, two rows: V_rc = sum_k (G_k - mean)^2
    g = torch.tensor([[[0.0, 1.0], [2.0, 0.0]], [[3.0, 1.0], [2.0, 1.0]], [[0.0, 4.0], [2.0, 2.0]]])
    v = torch.tensor([[6.0, 6.0], [0.0, 2.0]])  # e.g. column 0 row 0: (0,3,0) mean 1 -> 1+4+1
    assert torch.allclose(gradient_variance(g), v)
    scale = torch.tensor([2.0, 0.5])
    assert gradvar_penalty(g, scale).item() == pytest.approx(12.0**2 + 3.0**2 + 0.0 + 1.0**2)


def test_gradient_variance_is_zero_for_equal_gradients() -> None:
    # equal gradients in every environment: no variance, no penalty
    same = torch.ones(3, 2, 4)
    assert torch.equal(gradient_variance(same), torch.zeros(2, 4))
    assert gradvar_penalty(same, torch.ones(4)).item() == 0.0


def test_masked_variance_penalty_rejects_mismatched_scale() -> None:
    with pytest.raises(ValueError, match="mask_scale"):
        masked_variance_penalty(torch.ones(2, 3), torch.ones(4))


def _toy_gradvar(weight: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """A tiny gated projection scorer with two environments; returns the gradvar penalty."""
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    users = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    labels = (torch.arange(12) % 2).to(torch.float64)
    env = torch.arange(12) < 6
    gates = torch.clamp(mu + 0.5, 0.0, 1.0)
    scores = (users * ((features * gates) @ weight.T)).sum(dim=1)
    losses = [F.binary_cross_entropy_with_logits(scores[idx], labels[idx]) for idx in (env, ~env)]
    env_grads = per_env_param_grads(losses, weight)
    assert env_grads.shape == (2, *weight.shape)
    return gradvar_penalty(env_grads, mu + 0.5)


def test_gradvar_gradient_flows_to_mask_and_projection() -> None:
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    mu = (0.1 * torch.randn(4, generator=gen, dtype=torch.float64)).requires_grad_()
    penalty = _toy_gradvar(weight, mu)
    assert penalty.item() > 0.0
    penalty.backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0.0
    assert mu.grad is not None and bool((mu.grad != 0).all())
    # and the gradients are right (finite differences through the double backward)
    assert torch.autograd.gradcheck(_toy_gradvar, (weight.detach().requires_grad_(), mu.detach().requires_grad_()))


def test_per_env_param_grads_with_stochastic_gate_module() -> None:
    torch.manual_seed(0)
    gate = StochasticGate(4)
    weight = torch.nn.Parameter(torch.randn(2, 4))
    features = torch.randn(8, 4)
    gates = gate()
    losses = [((features[:4] * gates) @ weight.T).pow(2).mean(), ((features[4:] * gates) @ weight.T).mean()]
    penalty = gradvar_penalty(per_env_param_grads(losses, weight), gate.mask_scale())
    penalty.backward()
    assert gate.mu.grad is not None and float(gate.mu.grad.abs().sum()) > 0.0
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0.0


def test_per_env_param_grads_unused_param_and_bad_input() -> None:
    w = torch.ones(3, requires_grad=True)
    other = torch.ones(3, requires_grad=True)
    grads = per_env_param_grads([(w * 2).sum(), other.sum()], w)
    assert torch.equal(grads, torch.tensor([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="scalars"):
        per_env_param_grads([w * 2], w)
    with pytest.raises(ValueError, match="at least one"):
        per_env_param_grads([], w)


# ---------------------------------------------------------------------------------------------------- IRMv1


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _irmv1(env_scores: list[torch.Tensor], env_targets: list[torch.Tensor],
           env_weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The registered irmv1 penalty on per-environment (weighted) mean BCE losses of ``w * scores``: the scale
    gradients are formed the way the mask step forms them (autograd at w = 1, with graph)."""
    scales = [torch.ones((), dtype=s.dtype, requires_grad=True) for s in env_scores]
    losses = []
    for k, (scores, targets) in enumerate(zip(env_scores, env_targets, strict=True)):
        per = F.binary_cross_entropy_with_logits(scores * scales[k], targets, reduction="none")
        losses.append((per if env_weights is None else per * env_weights[k]).mean())
    env_losses = torch.stack(losses)

    def scale_grads() -> torch.Tensor:
        return torch.stack([torch.autograd.grad(env_losses[k], scales[k], create_graph=True)[0]
                            for k in range(len(scales))])

    inputs = PenaltyInputs(env_losses=env_losses, env_grads=lambda: torch.zeros(0), mask_scale=torch.ones(1),
                           scale_grads=scale_grads)
    assert PENALTIES["irmv1"].dummy_scale
    return PENALTIES["irmv1"].objective(inputs)


def test_irmv1_hand_computed() -> None:
    scores = [torch.tensor([1.0, -2.0]), torch.tensor([0.5])]
    targets = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    # d/dw mean BCE(w s, y) at w = 1 is mean((sigmoid(s) - y) * s)
    g1 = ((_sigmoid(1.0) - 1.0) * 1.0 + (_sigmoid(-2.0) - 0.0) * -2.0) / 2.0
    g2 = (_sigmoid(0.5) - 0.0) * 0.5
    assert _irmv1(scores, targets).item() == pytest.approx(g1**2 + g2**2, rel=1e-6)
    # per-example weights enter the mean
    weights = [torch.tensor([2.0, 0.0]), torch.tensor([3.0])]
    gw1 = (2.0 * (_sigmoid(1.0) - 1.0) * 1.0) / 2.0
    gw2 = 3.0 * (_sigmoid(0.5) - 0.0) * 0.5
    assert _irmv1(scores, targets, weights).item() == pytest.approx(gw1**2 + gw2**2, rel=1e-6)


def test_irmv1_is_zero_at_the_logistic_optimum_and_positive_elsewhere() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    true_theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = (torch.rand(200, generator=gen, dtype=torch.float64) < torch.sigmoid(x @ true_theta)).to(torch.float64)
    # Newton's method for the logistic regression optimum
    theta = torch.zeros(3, dtype=torch.float64)
    for _ in range(50):
        p = torch.sigmoid(x @ theta)
        grad = x.T @ (p - y) / len(y)
        hessian = (x.T * (p * (1 - p))) @ x / len(y)
        theta = theta - torch.linalg.solve(hessian, grad)
    perm = torch.randperm(200, generator=gen)
    env_x, env_y = [x, x[perm]], [y, y[perm]]  # two environments sharing the same optimum
    at_optimum = _irmv1([ex @ theta for ex in env_x], env_y)
    assert at_optimum.item() < 1e-20
    off = _irmv1([ex @ (1.5 * theta) for ex in env_x], env_y)
    assert off.item() > 1e-4


def test_irmv1_backpropagates_into_scores() -> None:
    theta = torch.tensor([0.3, -0.7], requires_grad=True)
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]])
    y = torch.tensor([1.0, 0.0, 1.0])
    penalty = _irmv1([x[:2] @ theta, x[2:] @ theta], [y[:2], y[2:]])
    penalty.backward()
    assert theta.grad is not None and float(theta.grad.abs().sum()) > 0.0


# ----------------------------------------------------------------------------------------------------- V-REx


def test_vrex_penalty() -> None:
    assert vrex_penalty(torch.tensor([0.7, 0.7, 0.7])).item() == 0.0
    # population variance of (1, 2, 3, 6): mean 3, squares (4, 1, 0, 9) -> 14 / 4
    assert vrex_penalty(torch.tensor([1.0, 2.0, 3.0, 6.0])).item() == pytest.approx(3.5)
    losses = torch.tensor([1.0, 3.0], requires_grad=True)
    vrex_penalty(losses).backward()
    assert losses.grad is not None
    assert torch.allclose(losses.grad, torch.tensor([-1.0, 1.0]))  # d/dL_k of mean (L - mean)^2 = (L_k - mean)
    with pytest.raises(ValueError, match=r"\[E\]"):
        vrex_penalty(torch.ones(2, 2))


def worst_minus_mean_risk(inputs: PenaltyInputs) -> torch.Tensor:
    """A penalty written for this test: how far the worst environment's risk is above the mean."""
    return inputs.env_losses.max() - inputs.env_losses.mean()


def test_a_registered_penalty_drives_mask_learning(monkeypatch: pytest.MonkeyPatch) -> None:
    from painvrl.config import load_config
    from painvrl.data.registry import load_dataset
    from painvrl.distributed.collective import LocalCollective
    from painvrl.training.pipeline import run_pipeline

    calls: list[float] = []

    def recorded(inputs: PenaltyInputs) -> torch.Tensor:
        value = worst_minus_mean_risk(inputs)
        calls.append(float(value.detach()))
        return value

    monkeypatch.setitem(PENALTIES, "worst_gap", Penalty(recorded))
    config = load_config(None, [
        "method=painvrl", "mask.penalty=worst_gap", "dataset.ood=synthetic", "dataset.synthetic.n_users=100",
        "dataset.synthetic.n_items=140", "dataset.synthetic.modality_dims=[6,6]",
        "dataset.synthetic.interactions_per_user=12", "model.k_id=8", "model.k_f=8", "model.n_negatives=4",
        "train.epochs=2", "train.progress=false", "painvrl.rounds=1", "painvrl.pretrain_epochs=1",
        "environments.max_iters=1", "environments.env_epochs=1", "mask.epochs=2", "mask.warmup_steps=0"])
    result = run_pipeline(config, load_dataset(config.dataset), LocalCollective(), None)
    assert calls and all(math.isfinite(v) and v >= 0 for v in calls)
    assert result.mask is not None and math.isfinite(result.metrics["test"]["ood"]["recall@20"])
