"""Recommenders whose score is linear in the content vector: s(u, i) = <P_u, [Q_i ; h_i]>, h_i = encoder(f_i).

UltraGCN-style and VBPR-style models share this form: a user table P [n_users, k_id + k_f], an item-ID table
Q [n_items, k_id] and the encoder slot. A subclass only says how scores become a loss (:meth:`scores_loss`).
The form is what lets the invariance methods use closed-form fast paths (one matmul for every environment
model, the IRM gradients without double backward); see painvrl/invariance/linear_models.py.

Speed rule: a step encodes only the unique items of its batch (positives and negatives), never the whole item
matrix; full-item encoding happens once per evaluation. With a shared negative pool the negatives are scored as
one [b, P] product against the pool's items.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from painvrl.model.recommender import NegativePool, Recommender, UserScorer


class LinearContentRecommender(Recommender):
    """User table ``user_embedding`` [n_users, k_id + k_f], item-ID table ``item_embedding`` [n_items, k_id]."""

    reads_logit_offset: ClassVar[bool] = True

    user_embedding: nn.Parameter
    item_embedding: nn.Parameter
    k_id: int
    k_f: int

    def __init__(self, n_users: int, n_items: int, features: torch.Tensor, encoder: nn.Module, k_id: int, k_f: int,
                 init_std: float, l2: float) -> None:
        """P and Q from torch's seeded global generator, N(0, init_std^2); the encoder is built by the caller."""
        super().__init__()
        self.n_users, self.n_items, self.k_id, self.k_f = n_users, n_items, k_id, k_f
        self.user_embedding = nn.Parameter(torch.randn(n_users, k_id + k_f) * init_std)
        self.item_embedding = nn.Parameter(torch.randn(n_items, k_id) * init_std)
        self.encoder = encoder
        # Data, not state: excluded from checkpoints (persistent=False) and rebuilt from the dataset.
        self.register_buffer("features", features.to(torch.float32), persistent=False)
        self.l2 = float(l2)

    @abstractmethod
    def scores_loss(self, users: torch.Tensor, pos_items: torch.Tensor, pos_scores: torch.Tensor,
                    neg_items: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
        """[B] loss of each example from its positive score [B] and negative scores [B, n_neg]."""

    # ------------------------------------------------------------------------------------------- scoring
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """[len(items), k_id + k_f] for the given item ids."""
        ids = F.embedding(items, self.item_embedding, sparse=self.sparse_gradients)
        return torch.cat([ids, self.encoder(self.features[items])], dim=1)

    @torch.no_grad()
    def all_item_vectors(self, chunk_size: int = 8192) -> torch.Tensor:
        """Every item's vector, encoded chunk by chunk (once per evaluation)."""
        parts = []
        for start in range(0, self.n_items, chunk_size):
            items = torch.arange(start, min(start + chunk_size, self.n_items), device=self.features.device)
            parts.append(self.item_vectors(items))
        return torch.cat(parts)

    def ranking_scorer(self) -> UserScorer:
        item_vectors = self.all_item_vectors()
        return lambda users: self.user_embedding[users.to(item_vectors.device)] @ item_vectors.T

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_embedding[users] * self.item_vectors(items)).sum(-1)

    def score_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.detach().clone(), self.all_item_vectors()

    def batch_scores(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
                     pool: NegativePool | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(user vectors [B, k], positive item vectors [B, k], positive scores [B], negative scores [B, n_neg]),
        encoding each item once."""
        user_vectors = F.embedding(users, self.user_embedding, sparse=self.sparse_gradients)
        batch = users.shape[0]
        if pool is not None:
            pool_items, positions = pool
            vectors = self.item_vectors(torch.cat([pos_items, pool_items]))
            pos_vectors, pool_vectors = vectors[:batch], vectors[batch:]
            neg_scores = torch.gather(user_vectors @ pool_vectors.T, 1, positions)
        else:
            unique, inverse = torch.unique(torch.cat([pos_items, neg_items.reshape(-1)]), return_inverse=True)
            vectors = self.item_vectors(unique)
            pos_vectors = vectors[inverse[:batch]]
            neg_vectors = vectors[inverse[batch:]].view(batch, -1, vectors.shape[1])
            neg_scores = torch.bmm(neg_vectors, user_vectors.unsqueeze(2)).squeeze(2)
        pos_scores = (user_vectors * pos_vectors).sum(-1)
        pos_scores, neg_scores = self.offset_logits(pos_items, neg_items, pos_scores, neg_scores)
        return user_vectors, pos_vectors, pos_scores, neg_scores

    # ---------------------------------------------------------------------------------------------- loss
    def loss_terms(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                   pool: NegativePool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        user_vectors, pos_vectors, pos_scores, neg_scores = self.batch_scores(users, pos_items, neg_items, pool)
        per_example = self.scores_loss(users, pos_items, pos_scores, neg_items, neg_scores)
        example_reg = user_vectors.pow(2).sum() + pos_vectors[:, : self.k_id].pow(2).sum()
        return per_example, self.l2 * example_reg

    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                             pool: NegativePool | None = None,
                             score_scale: torch.Tensor | None = None) -> torch.Tensor:
        _, _, pos_scores, neg_scores = self.batch_scores(users, pos_items, neg_items, pool)
        if score_scale is not None:
            pos_scores, neg_scores = pos_scores * score_scale, neg_scores * score_scale.unsqueeze(1)
        return self.scores_loss(users, pos_items, pos_scores, neg_items, neg_scores)

    def example_regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        return self.l2 * (self.user_embedding[users].pow(2).sum() + self.item_embedding[pos_items].pow(2).sum())

    def sparse_tables(self) -> list[nn.Parameter]:
        return [self.user_embedding, self.item_embedding]

    def without_item_ids(self) -> Recommender:
        with torch.no_grad():
            self.item_embedding.zero_()
        return self
