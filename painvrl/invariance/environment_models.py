"""HEI's environment models: E copies of the backbone that differ only in the projection in their encoder slot.

score_k(u, i) = the backbone's score with encoder h = W_k x_i, where x_i = (1 - m) * f_i (``input="variant"``)
or f_i (``input="invrl"``, with the penalty rho * mean|W_k * m| added by :meth:`penalty`). The projections are
STACKED in one parameter ``weight [E, k_f, d]`` and trained jointly; the backbone's own parameters stay frozen.

:func:`environment_models` picks the implementation: backbones whose score is linear in the content vector get
the batched one of :mod:`painvrl.invariance.linear_models` (every environment in one matmul); any other
backbone gets :class:`EnvironmentModels`, which runs the backbone's own loss once per environment.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from painvrl.errors import PainvrlInputError
from painvrl.model.recommender import Recommender


class EnvironmentScorers(Protocol):
    """What HEI needs from its E environment models."""

    n_envs: int
    n_items: int
    weight: nn.Parameter

    def trainable(self) -> list[nn.Parameter]: ...

    def set_mask(self, mask: torch.Tensor) -> None: ...

    def new_epoch(self) -> None: ...

    def example_losses(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
                       envs: torch.Tensor) -> torch.Tensor: ...

    def example_losses_pooled(self, users: torch.Tensor, pos_items: torch.Tensor, pools: torch.Tensor,
                              positions: torch.Tensor, envs: torch.Tensor) -> torch.Tensor: ...

    def penalty(self) -> torch.Tensor: ...

    def score_all(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...

    def loss_all(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
                 chunk: int = 1024) -> torch.Tensor: ...


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


def check_input_mode(input_mode: str) -> None:
    if input_mode not in ("variant", "invrl"):
        raise PainvrlInputError(f"config field 'environments.input': unknown mode {input_mode!r} "
                                "(known: variant, invrl)")


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
