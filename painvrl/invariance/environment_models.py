"""What HEI needs from its E environment models (:class:`EnvironmentScorers`), implemented by the batched
:class:`painvrl.invariance.linear_models.StackedEnvironmentModels` on a backbone's feature path
(painvrl/invariance/feature_path.py): score_k(u, i) = <P_u, [Q_i ; W_k x_i]> with x_i = (1 - m) * f_i
(``input="variant"``) or f_i (``input="invrl"``, with the penalty rho * mean|W_k * m|).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from painvrl.errors import PainvrlInputError


class EnvironmentScorers(Protocol):
    """What HEI needs from its E environment models."""

    n_envs: int
    n_items: int
    weight: nn.Parameter

    def trainable(self) -> list[nn.Parameter]: ...

    def example_losses(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
                       envs: torch.Tensor) -> torch.Tensor: ...

    def example_losses_pooled(self, users: torch.Tensor, pos_items: torch.Tensor, pools: torch.Tensor,
                              positions: torch.Tensor, envs: torch.Tensor) -> torch.Tensor: ...

    def penalty(self) -> torch.Tensor: ...

    def score_all(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...

    def loss_all(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
                 chunk: int = 1024) -> torch.Tensor: ...


def check_input_mode(input_mode: str) -> None:
    if input_mode not in ("variant", "invrl"):
        raise PainvrlInputError(f"config field 'environments.input': unknown mode {input_mode!r} "
                                "(known: variant, invrl)")
