"""Multimodal UltraGCN-style scorer (docs/algorithm.md).

score(u, i) = <P_u, [Q_i ; h_i]> where h_i = encoder(f_i). The encoder is any module mapping feature rows
[b, d] to [b, k_f]: a plain projection (ERM), a gated projection (mask learning) or the convert module.

Speed rule: a step encodes only the unique items of its batch (positives and negatives), never the whole item
matrix; full-item encoding happens once per evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def degree_weights(train: np.ndarray, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UltraGCN constraint weights b_u = sqrt(d_u + 1) / d_u and b_i = 1 / sqrt(d_i + 1) (d_u >= 1 guarded)."""
    user_degree = np.bincount(train[:, 0], minlength=n_users).astype(np.float64)
    item_degree = np.bincount(train[:, 1], minlength=n_items).astype(np.float64)
    b_user = np.sqrt(user_degree + 1.0) / np.maximum(user_degree, 1.0)
    b_item = 1.0 / np.sqrt(item_degree + 1.0)
    return torch.tensor(b_user, dtype=torch.float32), torch.tensor(b_item, dtype=torch.float32)


class FeatureProjection(nn.Module):
    """h = W f (no bias: an item with a missing modality block contributes nothing from it)."""

    def __init__(self, feature_dim: int, k_f: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k_f, feature_dim) * init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T


class Backbone(nn.Module):
    """User table P, item-ID table Q, a feature encoder, and the degree-weighted BCE loss."""

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
        super().__init__()
        self.n_users, self.n_items, self.k_id, self.k_f = n_users, n_items, k_id, k_f
        self.user_embedding = nn.Parameter(torch.randn(n_users, k_id + k_f) * init_std)
        self.item_embedding = nn.Parameter(torch.randn(n_items, k_id) * init_std)
        self.encoder = encoder
        # Data, not state: excluded from checkpoints (persistent=False) and rebuilt from the dataset.
        self.register_buffer("features", features.to(torch.float32), persistent=False)
        self.register_buffer("b_user", b_user, persistent=False)
        self.register_buffer("b_item", b_item, persistent=False)
        self.features: torch.Tensor
        self.b_user: torch.Tensor
        self.b_item: torch.Tensor
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.l2 = float(l2)

    # ------------------------------------------------------------------------------------------- scoring
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """[len(items), k_id + k_f] for the given item ids."""
        return torch.cat([self.item_embedding[items], self.encoder(self.features[items])], dim=1)

    @torch.no_grad()
    def all_item_vectors(self, chunk_size: int = 8192) -> torch.Tensor:
        """Every item's vector, encoded chunk by chunk (once per evaluation)."""
        parts = []
        for start in range(0, self.n_items, chunk_size):
            items = torch.arange(start, min(start + chunk_size, self.n_items), device=self.features.device)
            parts.append(self.item_vectors(items))
        return torch.cat(parts)

    def ranking_scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Scores of every item for a batch of users; the item vectors are encoded once per call."""
        item_vectors = self.all_item_vectors()
        return lambda users: self.user_embedding[users.to(item_vectors.device)] @ item_vectors.T

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_embedding[users] * self.item_vectors(items)).sum(-1)

    # ---------------------------------------------------------------------------------------------- loss
    def batch_scores(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores of positives [B] and negatives [B, n_neg], encoding each unique item once.

        Returns (pos_scores, neg_scores, unique_item_vectors).
        """
        all_items = torch.cat([pos_items, neg_items.reshape(-1)])
        unique, inverse = torch.unique(all_items, return_inverse=True)
        vectors = self.item_vectors(unique)
        user_vectors = self.user_embedding[users]
        batch = users.shape[0]
        pos_vectors = vectors[inverse[:batch]]
        neg_vectors = vectors[inverse[batch:]].view(batch, -1, vectors.shape[1])
        pos_scores = (user_vectors * pos_vectors).sum(-1)
        neg_scores = torch.bmm(neg_vectors, user_vectors.unsqueeze(2)).squeeze(2)
        return pos_scores, neg_scores, vectors

    def per_example_loss(
        self, users: torch.Tensor, pos_items: torch.Tensor, pos_scores: torch.Tensor, neg_items: torch.Tensor,
        neg_scores: torch.Tensor
    ) -> torch.Tensor:
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

    def regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        """L2 on the batch's embeddings (mean per example) and on the encoder's parameters."""
        reg = self.user_embedding[users].pow(2).sum(1).mean() + self.item_embedding[pos_items].pow(2).sum(1).mean()
        for param in self.encoder.parameters():
            reg = reg + param.pow(2).sum()
        return self.l2 * reg

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        """Mean backbone loss of a batch plus L2 (the ERM objective)."""
        pos_scores, neg_scores, _ = self.batch_scores(users, pos_items, neg_items)
        per_example = self.per_example_loss(users, pos_items, pos_scores, neg_items, neg_scores)
        return per_example.mean() + self.regularisation(users, pos_items)
