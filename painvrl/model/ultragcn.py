"""Multimodal UltraGCN-style scorer (docs/algorithm.md), the default backbone ``model.name=ultragcn``.

score(u, i) = <P_u, [Q_i ; h_i]> where h_i = encoder(f_i), trained with UltraGCN's degree-weighted binary
cross-entropy: a positive (u, i) has weight w1 + w2 b_u b_i and each negative w3 + w4 b_u b_j, with the
constraint weights b_u = sqrt(d_u + 1) / d_u and b_i = 1 / sqrt(d_i + 1) of the training degrees; the weights
w1..w4 are ``model.settings.ultragcn.loss_weights``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from painvrl.errors import PainvrlInputError
from painvrl.model.common import settings_from
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import BuildContext


@dataclass(frozen=True)
class UltraGCNSettings:
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    """UltraGCN weights w1..w4 (positive, positive degree-weighted, negative, negative degree-weighted)."""

    def __post_init__(self) -> None:
        if len(self.loss_weights) != 4:
            raise PainvrlInputError("config field 'model.settings.ultragcn.loss_weights': needs exactly 4 weights "
                                    f"w1..w4, got {list(self.loss_weights)}")


def degree_weights(train: np.ndarray, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UltraGCN constraint weights b_u = sqrt(d_u + 1) / d_u and b_i = 1 / sqrt(d_i + 1) (d_u >= 1 guarded)."""
    user_degree = np.bincount(train[:, 0], minlength=n_users).astype(np.float64)
    item_degree = np.bincount(train[:, 1], minlength=n_items).astype(np.float64)
    b_user = np.sqrt(user_degree + 1.0) / np.maximum(user_degree, 1.0)
    b_item = 1.0 / np.sqrt(item_degree + 1.0)
    return torch.tensor(b_user, dtype=torch.float32), torch.tensor(b_item, dtype=torch.float32)


class UltraGCN(LinearContentRecommender):
    """User table P, item-ID table Q, a feature encoder, and the degree-weighted BCE loss."""

    name: ClassVar[str] = "ultragcn"
    settings_type: ClassVar[type[UltraGCNSettings]] = UltraGCNSettings
    b_user: torch.Tensor
    b_item: torch.Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        features: torch.Tensor,
        encoder: nn.Module,
        b_user: torch.Tensor,
        b_item: torch.Tensor,
        k_id: int = 64,
        k_f: int = 64,
        init_std: float = 0.01,
        loss_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        l2: float = 1e-4,
    ) -> None:
        super().__init__(n_users, n_items, features, encoder, k_id, k_f, init_std, l2)
        self.register_buffer("b_user", b_user, persistent=False)
        self.register_buffer("b_item", b_item, persistent=False)
        self.loss_weights = tuple(float(w) for w in loss_weights)

    @classmethod
    def build(cls, context: BuildContext) -> UltraGCN:
        """Encoder first (already built by the caller), then P and Q from torch's seeded global generator."""
        m = context.model_config
        b_user, b_item = degree_weights(context.train, context.n_users, context.n_items)
        weights = tuple(float(w) for w in settings_from(m, cls.name, UltraGCNSettings).loss_weights)
        return cls(context.n_users, context.n_items, context.features, context.encoder, b_user, b_item,
                   k_id=m.k_id, k_f=m.k_f, init_std=m.init_std,
                   loss_weights=(weights[0], weights[1], weights[2], weights[3]), l2=m.l2)

    def scores_loss(self, users: torch.Tensor, pos_items: torch.Tensor, pos_scores: torch.Tensor,
                    neg_items: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
        """[B] UltraGCN-weighted BCE of each positive and the mean over its negatives (averaged, not summed,
        so penalty scales do not depend on the number of negatives)."""
        w1, w2, w3, w4 = self.loss_weights
        b_u = self.b_user[users]
        pos_weight = w1 + w2 * b_u * self.b_item[pos_items]
        neg_weight = w3 + w4 * b_u.unsqueeze(1) * self.b_item[neg_items]
        pos_loss = pos_weight * F.binary_cross_entropy_with_logits(pos_scores, torch.ones_like(pos_scores),
                                                                   reduction="none")
        neg_loss = neg_weight * F.binary_cross_entropy_with_logits(neg_scores, torch.zeros_like(neg_scores),
                                                                   reduction="none")
        return pos_loss + neg_loss.mean(dim=1)
