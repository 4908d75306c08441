"""Stochastic gates (STG, Yamada, Lindenbaum, Negahban & Kluger, ICML 2020) for the invariant feature mask.

Each feature c has a gate logit mu_c (init 0, so every gate starts half open). Training draws
``g = clamp(mu + 0.5 + sigma * eps, 0, 1)`` with fresh ``eps ~ N(0, I)`` per call; evaluation uses the
deterministic ``m = clamp(mu + 0.5, 0, 1)``. The expected number of open gates
``sum_c P(mu_c + 0.5 + sigma eps_c > 0) = sum_c Phi((mu_c + 0.5) / sigma)`` is the sparsity regulariser
(docs/algorithm.md); ``||mu||^2`` is the InvRL-parity alternative.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StochasticGate(nn.Module):
    """A vector of ``dim`` stochastic gates with trainable logits ``mu`` (init 0) and fixed noise scale ``sigma``."""

    def __init__(self, dim: int, sigma: float = 0.01) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"gate dimension must be >= 1, got {dim}")
        if not sigma > 0.0:
            raise ValueError(f"gate sigma must be > 0, got {sigma}")
        self.dim = dim
        self.sigma = float(sigma)
        self.mu = nn.Parameter(torch.zeros(dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, sigma={self.sigma}"

    def forward(self, generator: torch.Generator | None = None) -> Tensor:
        """Training mode: noisy gates ``clamp(mu + 0.5 + sigma * eps, 0, 1)``; eval mode: :meth:`eval_gates`.

        ``eps`` comes from ``generator`` when given (it must live on mu's device), else torch's global RNG.
        """
        if not self.training:
            return self.eval_gates()
        eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return torch.clamp(self.mu + 0.5 + self.sigma * eps, 0.0, 1.0)

    def eval_gates(self) -> Tensor:
        """Deterministic gates ``clamp(mu + 0.5, 0, 1)`` (differentiable in mu inside (0, 1))."""
        return torch.clamp(self.mu + 0.5, 0.0, 1.0)

    def mask_scale(self) -> Tensor:
        """``mu + 0.5`` (unclamped): the per-feature factor of the gradient-variance penalty."""
        return self.mu + 0.5

    def expected_l0(self) -> Tensor:
        """Expected number of open gates ``sum_c Phi((mu_c + 0.5) / sigma)`` (differentiable)."""
        return torch.special.ndtr((self.mu + 0.5) / self.sigma).sum()

    def l2(self) -> Tensor:
        """``||mu||^2`` (InvRL's mask regulariser)."""
        return (self.mu**2).sum()

    def mask(self) -> Tensor:
        """The evaluation mask ``clamp(mu + 0.5, 0, 1)``, detached (for saving and feature selection)."""
        return self.eval_gates().detach()

    def density(self) -> float:
        """Mean of the evaluation mask."""
        return float(self.mask().mean())

    def fraction_open(self) -> float:
        """Fraction of features whose evaluation mask exceeds 0.5."""
        return float((self.mask() > 0.5).to(torch.float32).mean())
