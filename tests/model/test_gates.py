"""Tests for painvrl.model.gates.StochasticGate."""

from __future__ import annotations

import math

import pytest
import torch

from painvrl.model.gates import StochasticGate


def _set_mu(gate: StochasticGate, values: list[float]) -> None:
    with torch.no_grad():
        gate.mu.copy_(torch.tensor(values))


def test_init_is_half_open() -> None:
    gate = StochasticGate(5)
    assert torch.equal(gate.mu.detach(), torch.zeros(5))
    assert gate.sigma == 0.01
    gate.eval()
    assert torch.equal(gate(), torch.full((5,), 0.5))
    assert gate.density() == pytest.approx(0.5)
    assert gate.fraction_open() == 0.0  # exactly 0.5 is not "open"


def test_training_forward_is_noisy_clamped_and_reproducible() -> None:
    gate = StochasticGate(1000, sigma=0.1)
    _set_mu(gate, [0.0] * 998 + [5.0, -5.0])
    gate.train()
    gen = torch.Generator().manual_seed(0)
    g = gate(generator=gen).detach()
    expected = torch.clamp(
        gate.mu.detach() + 0.5 + 0.1 * torch.randn(1000, generator=torch.Generator().manual_seed(0)), 0.0, 1.0
    )
    assert torch.allclose(g, expected)
    assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0
    assert g[998].item() == 1.0 and g[999].item() == 0.0
    # the noise has the requested scale and is fresh on every call
    noise = g[:998] - 0.5
    assert float(noise.std()) == pytest.approx(0.1, rel=0.1)
    assert not torch.equal(gate(generator=gen).detach(), g)
    # global RNG path: seeding torch reproduces the draw
    torch.manual_seed(3)
    first = gate()
    torch.manual_seed(3)
    assert torch.equal(gate(), first)


def test_training_gates_carry_gradient_to_mu() -> None:
    gate = StochasticGate(3, sigma=0.01)
    _set_mu(gate, [0.0, 0.2, 10.0])
    gate.train()
    gate(generator=torch.Generator().manual_seed(1)).sum().backward()
    assert gate.mu.grad is not None
    # inside (0, 1) the gate is mu + const, so d/dmu = 1; a saturated gate passes no gradient
    assert torch.allclose(gate.mu.grad, torch.tensor([1.0, 1.0, 0.0]))


def test_eval_mode_is_deterministic_clamp() -> None:
    gate = StochasticGate(4)
    _set_mu(gate, [-1.0, -0.2, 0.3, 2.0])
    gate.eval()
    expected = torch.tensor([0.0, 0.3, 0.8, 1.0])
    assert torch.allclose(gate(), expected)
    assert torch.allclose(gate(), gate())
    mask = gate.mask()
    assert not mask.requires_grad and torch.allclose(mask, expected)
    assert gate.density() == pytest.approx(float(expected.mean()))
    assert gate.fraction_open() == pytest.approx(0.5)  # 0.8 and 1.0 exceed 0.5
    # mask() is the eval mask even while the module is in training mode
    gate.train()
    assert torch.allclose(gate.mask(), expected)


def test_expected_l0_and_l2() -> None:
    gate = StochasticGate(3, sigma=0.5)
    _set_mu(gate, [0.0, -0.5, 1.0])
    phi = [0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) for x in (1.0, 0.0, 3.0)]  # (mu + 0.5) / sigma
    assert gate.expected_l0().item() == pytest.approx(sum(phi), rel=1e-6)
    assert gate.l2().item() == pytest.approx(1.25)
    # both regularisers are differentiable in mu; the L0 gradient is phi((mu + 0.5)/sigma)/sigma
    gate.expected_l0().backward()
    assert gate.mu.grad is not None
    pdf = torch.tensor([math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) for x in (1.0, 0.0, 3.0)]) / 0.5
    assert torch.allclose(gate.mu.grad, pdf, rtol=1e-5)
    gate.mu.grad = None
    gate.l2().backward()
    assert gate.mu.grad is not None
    assert torch.allclose(gate.mu.grad, 2 * gate.mu.detach())


def test_mask_scale_is_unclamped_mu_plus_half() -> None:
    gate = StochasticGate(2)
    _set_mu(gate, [1.0, -1.0])
    assert torch.allclose(gate.mask_scale(), torch.tensor([1.5, -0.5]))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dimension"):
        StochasticGate(0)
    with pytest.raises(ValueError, match="sigma"):
        StochasticGate(3, sigma=0.0)
