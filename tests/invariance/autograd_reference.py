"""Autograd references for the closed-form invariance models: E environment models and a mask model that score
through the backbone's own per-interaction loss, with the projections in its encoder slot. The product scores
through the feature path (painvrl/invariance/linear_models.py); the tests check it against these, and use them
to show why a backbone whose ranking score ignores its slot cannot be learned through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from painvrl.invariance.environment_models import check_input_mode
from painvrl.invariance.mask_models import EnvBatch, MaskModel
from painvrl.model.recommender import Recommender


class EnvironmentProjection(nn.Module):
    """Encoder slot of the environment models: h = W_env x with the stacked ``weight [E, k_f, d]``."""

    mask: torch.Tensor

    def __init__(self, weight: nn.Parameter, mask: torch.Tensor, input_mode: str) -> None:
        super().__init__()
        self.weight = weight
        self.register_buffer("mask", mask.detach().to(weight).clone(), persistent=False)
        self.input_mode = input_mode
        self.env = 0
        """Which environment's projection :meth:`forward` applies."""
        self.generation = 0
        """Advanced by :meth:`EnvironmentModels.new_epoch` (see ``painvrl.model.encoders.graph_key``)."""

    def graph_key(self) -> tuple[int, int]:
        return self.generation, self.env

    def inputs(self, features: torch.Tensor) -> torch.Tensor:
        return features * (1.0 - self.mask) if self.input_mode == "variant" else features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.inputs(features) @ self.weight[self.env].T

    def feature_gate(self) -> torch.Tensor | None:
        return 1.0 - self.mask if self.input_mode == "variant" else None


class EnvironmentModels(nn.Module):
    """E environment models over any backbone: one frozen copy whose slot applies environment ``env``'s
    projection, evaluated once per environment."""

    def __init__(self, n_envs: int, pretrained: Recommender, mask: torch.Tensor, k_f: int,
                 input_mode: str = "variant", l1_rho: float = 0.0, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_input_mode(input_mode)
        device = pretrained.features.device
        d = int(pretrained.features.shape[1])
        self.n_envs, self.k_f, self.feature_dim, self.input_mode = n_envs, k_f, d, input_mode
        self.n_items, self.l1_rho, self.l2 = pretrained.n_items, float(l1_rho), pretrained.l2
        self.weight = nn.Parameter((torch.randn(n_envs, k_f, d, generator=generator) * init_std).to(device))
        self.encoder = EnvironmentProjection(self.weight, mask.to(device), input_mode)
        self.view = pretrained.frozen_with_encoder(self.encoder)

    def trainable(self) -> list[nn.Parameter]:
        return [self.weight]

    def set_mask(self, mask: torch.Tensor) -> None:
        self.encoder.mask.copy_(mask.detach().to(self.encoder.mask))
        self.new_epoch()

    def new_epoch(self) -> None:
        """The projections are about to move on: graphs the backbone builds from them are searched anew."""
        self.encoder.generation += 1

    def _under(self, env: int) -> Recommender:
        self.encoder.env = env
        return self.view

    def example_losses(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
                       envs: torch.Tensor) -> torch.Tensor:
        """[B] loss of each positive under ITS OWN environment's model."""
        out = torch.zeros(users.shape[0], device=users.device, dtype=self.weight.dtype)
        for env in torch.unique(envs).tolist():
            sel = torch.nonzero(envs == env, as_tuple=True)[0]
            losses = self._under(int(env)).per_interaction_loss(users[sel], pos_items[sel], neg_items[sel])
            out = out.index_put((sel,), losses)
        return out

    def example_losses_pooled(self, users: torch.Tensor, pos_items: torch.Tensor, pools: torch.Tensor,
                              positions: torch.Tensor, envs: torch.Tensor) -> torch.Tensor:
        """[B] own-environment losses; environment k's negatives are ``pools[k][positions]``."""
        out = torch.zeros(users.shape[0], device=users.device, dtype=self.weight.dtype)
        for env in torch.unique(envs).tolist():
            sel = torch.nonzero(envs == env, as_tuple=True)[0]
            pool = pools[int(env)]
            losses = self._under(int(env)).per_interaction_loss(users[sel], pos_items[sel], pool[positions[sel]],
                                                                pool=(pool, positions[sel]))
            out = out.index_put((sel,), losses)
        return out

    def penalty(self) -> torch.Tensor:
        """L2 on the projections (the backbone's weight) plus, for ``input="invrl"``, rho * mean|W_k * m|."""
        reg = self.l2 * self.weight.pow(2).sum()
        if self.input_mode == "invrl" and self.l1_rho > 0:
            reg = reg + self.l1_rho * (self.weight * self.encoder.mask).abs().mean()
        return reg

    @torch.no_grad()
    def score_all(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, E] scores of each pair under every model."""
        return torch.stack([self._under(env).score_pairs(users, items) for env in range(self.n_envs)], dim=1)

    @torch.no_grad()
    def loss_all(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
                 chunk: int = 1024) -> torch.Tensor:
        """[B, E] own loss of each positive under every model (negatives shared by all models)."""
        parts = []
        for s in range(0, users.shape[0], chunk):
            rows = slice(s, s + chunk)
            parts.append(torch.stack([self._under(env).per_interaction_loss(users[rows], pos_items[rows],
                                                                            neg_items[rows])
                                      for env in range(self.n_envs)], dim=1))
        return torch.cat(parts) if parts else users.new_zeros((0, self.n_envs), dtype=self.weight.dtype)


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




class AutogradMaskModel(MaskModel):
    """The mask model through a frozen copy of ``pretrained`` (any backbone) whose slot applies W to the gated
    features of the step; dL_k/dW by autograd."""

    def __init__(self, pretrained: Recommender, k_f: int, sigma: float, init_std: float,
                 generator: torch.Generator | None = None, init_from_pretrained: bool = True,
                 use_item_ids: bool = True) -> None:
        super().__init__(pretrained, k_f, sigma, init_std, generator, init_from_pretrained,  # type: ignore[arg-type]
                         use_item_ids)
        self.slot = GatedProjection(self.weight)
        self.backbone = pretrained.frozen_with_encoder(self.slot)
        if not use_item_ids:
            self.backbone.without_item_ids()

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
        self.slot.gates = gates
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
        self.slot.gates = None
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

