"""IMG's mask model: stochastic-gate logits mu [d] and the projection W [k_f, d] of a backbone's feature path.

The scorer is a frozen copy of the feature path (painvrl/invariance/feature_path.py), linear in its content
vector h = W (g * f) with the step's gates g = clamp(mu + 0.5 + sigma * eps, 0, 1); only mu and W train. The
gates of a step are an argument of every forward (:meth:`MaskModel.env_forward`), never state of the module.
:class:`painvrl.invariance.linear_models.LinearMaskModel` computes the per-environment losses and their
gradients dL_k/dW in closed form.

Initialisation of W (``mask.init_from_pretrained``): True starts at ``2 W_pre`` (the pretrained ERM projection;
gates start at 0.5), so the first mask step sees the pretrained scores. Invariance penalties are only
informative near an ERM fit: at W ~ 0 the per-environment gradients only measure E[f | positive, env], which
differs across environments for invariant features too, while near an ERM fit the invariant coefficients agree
across environments and the spurious ones do not. False: a fresh random W.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from painvrl.invariance.penalties import per_env_param_grads
from painvrl.model.gates import StochasticGate
from painvrl.model.linear_content import LinearContentRecommender


@dataclass
class EnvBatch:
    """This rank's rows of one environment's global batch."""

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor
    global_count: int
    """Rows of the environment's GLOBAL batch (the divisor of its loss partial sum)."""
    pool: torch.Tensor | None = None
    """Optional negative pool [P] shared by all environments of the step (``neg_items == pool[positions]``)."""
    positions: torch.Tensor | None = None
    """[b, n_neg] positions into ``pool``."""


class ProjectionSlot(nn.Module):
    """The scorer copy's encoder slot: h = W x with the mask model's W (read, not copied)."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T


class MaskModel(nn.Module, ABC):
    """Gate logits mu and a projection W over a frozen copy of the feature path; with ``use_item_ids=False``
    (config ``mask.use_item_ids``) the copy's item-ID part is zeroed."""

    def __init__(self, pretrained: LinearContentRecommender, k_f: int, sigma: float, init_std: float,
                 generator: torch.Generator | None = None, init_from_pretrained: bool = True,
                 use_item_ids: bool = True) -> None:
        super().__init__()
        features = pretrained.features
        device = features.device
        d = int(features.shape[1])
        self.feature_dim, self.k_f, self.l2 = d, k_f, pretrained.l2
        self.gate = StochasticGate(d, sigma).to(device)
        weight = torch.randn(k_f, d, generator=generator) * init_std
        encoder_weight = getattr(pretrained.encoder, "weight", None)
        if init_from_pretrained and isinstance(encoder_weight, torch.Tensor) and encoder_weight.shape == (k_f, d):
            # Gates start at 0.5, so W = 2 W_pre reproduces the pretrained scores exactly.
            weight = 2.0 * encoder_weight.detach().cpu()
        self.weight = nn.Parameter(weight.to(device))
        self.backbone = pretrained.frozen_with_encoder(ProjectionSlot(self.weight))
        if not use_item_ids:
            self.backbone.without_item_ids()
        self.features = features

    def trainable(self) -> list[nn.Parameter]:
        return [self.gate.mu, self.weight]

    def gates(self, eps: torch.Tensor) -> torch.Tensor:
        """Training gates clamp(mu + 0.5 + sigma * eps, 0, 1) with externally drawn (rank-shared) noise."""
        return torch.clamp(self.gate.mu + 0.5 + self.gate.sigma * eps.to(self.gate.mu), 0.0, 1.0)

    def encoder_l2(self) -> torch.Tensor:
        """The backbone's L2 on the projection (part of the ERM objective)."""
        return self.l2 * self.weight.pow(2).sum()

    def env_partial_losses(
        self, gates: torch.Tensor, batches: Sequence[EnvBatch], scales: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """[E] this rank's loss sums per environment divided by the global per-environment counts."""
        return self.env_forward(gates, batches, scales)[0]

    @abstractmethod
    def env_forward(
        self, gates: torch.Tensor, batches: Sequence[EnvBatch], scales: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Per-environment loss partial sums [E] under ``gates`` and the cache :meth:`env_weight_grads` needs;
        ``scales`` multiply each environment's scores (IRMv1's dummy classifier scale)."""

    def env_weight_grads(self, cache: dict[str, Any]) -> torch.Tensor:
        """[E, k_f, d] dL_k/dW of this rank's partial losses, differentiable in (mu, W) (autograd)."""
        return per_env_param_grads(cache["partials"], self.weight)
