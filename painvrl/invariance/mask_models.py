"""IMG's mask model: stochastic-gate logits mu [d] and a projection W [k_f, d] in the backbone's encoder slot.

The backbone is a frozen copy of the pretrained model whose slot encodes h = W (g * f) with the step's gates
g = clamp(mu + 0.5 + sigma * eps, 0, 1); only mu and W train. :class:`MaskModel` works for any backbone: the
per-environment losses are the backbone's own per-interaction loss on one concatenated batch, and the
per-environment gradients dL_k/dW (for the gradvar penalty) come from autograd. Backbones whose score is linear
in the content vector get :class:`painvrl.invariance.linear_models.LinearMaskModel` (closed-form gradients).

Initialisation of W (``mask.init_from_pretrained``): True starts at ``2 W_pre`` (the pretrained ERM projection;
gates start at 0.5), so the first mask step sees the pretrained scores. Invariance penalties are only
informative near an ERM fit: at W ~ 0 the per-environment gradients only measure E[f | positive, env], which
differs across environments for invariant features too, while near an ERM fit the invariant coefficients agree
across environments and the spurious ones do not. False: a fresh random W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from painvrl.invariance.penalties import per_env_param_grads
from painvrl.model.gates import StochasticGate
from painvrl.model.recommender import Recommender


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


class GatedProjection(nn.Module):
    """Encoder slot h = W (g * f); the gates g of the current step are set by the mask model before a forward."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight
        self.gates: torch.Tensor | None = None
        self.generation = 0
        """Advanced by :meth:`MaskModel.new_epoch` (see ``painvrl.model.encoders.graph_key``)."""

    def graph_key(self) -> tuple[int, int]:
        return self.generation, 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        gated = features if self.gates is None else features * self.gates
        return gated @ self.weight.T

    def feature_gate(self) -> torch.Tensor | None:
        return None if self.gates is None else self.gates.detach()


class MaskModel(nn.Module):
    """Gate logits mu and a projection W in the slot of a frozen copy of the pretrained backbone; with
    ``use_item_ids=False`` (config ``mask.use_item_ids``) the copy's item-ID embeddings are zeroed."""

    def __init__(self, pretrained: Recommender, k_f: int, sigma: float, init_std: float,
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
        self.encoder = GatedProjection(self.weight)
        self.backbone = pretrained.frozen_with_encoder(self.encoder)
        if not use_item_ids:
            self.backbone.without_item_ids()
        self.features = features

    def trainable(self) -> list[nn.Parameter]:
        return [self.gate.mu, self.weight]

    def new_epoch(self) -> None:
        """An epoch of mask learning starts: graphs the backbone builds from the slot are searched anew."""
        self.encoder.generation += 1

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

    def env_forward(
        self, gates: torch.Tensor, batches: Sequence[EnvBatch], scales: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Per-environment loss partial sums [E] and the cache :meth:`env_weight_grads` needs.

        The environments' rows form one batch for the backbone's per-interaction loss; ``scales`` multiply each
        environment's scores (IRMv1's dummy classifier scale).
        """
        sizes = [int(b.users.shape[0]) for b in batches]
        anchor = (self.weight.sum() + gates.sum()) * 0.0  # keeps an empty environment attached to the graph
        if sum(sizes) == 0:
            partials = torch.stack([anchor for _ in batches])
            return partials, {"partials": list(partials)}
        self.encoder.gates = gates
        users = torch.cat([b.users for b in batches])
        pos_items = torch.cat([b.pos_items for b in batches])
        neg_items = torch.cat([b.neg_items for b in batches])
        pool = None
        if batches[0].pool is not None and all(b.positions is not None for b in batches):
            pool = (batches[0].pool, torch.cat([b.positions for b in batches if b.positions is not None]))
        score_scale = None
        if scales is not None:
            score_scale = torch.cat([scales[k].expand(n) for k, n in enumerate(sizes)])
        per = self.backbone.per_interaction_loss(users, pos_items, neg_items, pool=pool, score_scale=score_scale)
        self.encoder.gates = None
        out, offset = [], 0
        for batch, n in zip(batches, sizes, strict=True):
            if n == 0 or batch.global_count == 0:
                out.append(anchor)
            else:
                # + anchor: a backbone that ignores the features (lightgcn) still gives (mu, W) a zero gradient
                out.append(per[offset:offset + n].sum() / batch.global_count + anchor)
            offset += n
        partials = torch.stack(out)
        return partials, {"partials": out}

    def env_weight_grads(self, cache: dict[str, Any]) -> torch.Tensor:
        """[E, k_f, d] dL_k/dW of this rank's partial losses, differentiable in (mu, W) (autograd)."""
        return per_env_param_grads(cache["partials"], self.weight)
