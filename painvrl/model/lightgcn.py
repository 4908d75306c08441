"""LightGCN (He et al., SIGIR 2020): ID-only graph baseline.

E_0 = [users; items] ID embeddings, E_{l+1} = A E_l with A = D^-1/2 [[0, R], [R^T, 0]] D^-1/2 (torch.sparse),
final E = mean(E_0..E_L), score(u, i) = <e_u, e_i>. Loss: BPR (mean over the negatives, see
:func:`painvrl.model.common.bpr_per_interaction`), L2 ``model_config.l2`` on the batch's ego embeddings (users and
positives). The model consumes no item features: the encoder slot and ``features`` are held for the interface only,
so a feature mask has no effect on it (ID-only baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from painvrl.model.common import bpr_per_interaction, chunked_scorer, pair_scores, settings_from
from painvrl.model.graphs import bipartite_adjacency, propagate
from painvrl.model.recommender import BuildContext, NegativePool, Recommender, UserScorer


@dataclass(frozen=True)
class LightGCNSettings:
    n_layers: int = 3
    """Propagation layers (LightGCN paper: 3; MMRec searches 1-4)."""


class LightGCN(Recommender):
    name: ClassVar[str] = "lightgcn"
    settings_type: ClassVar[type[LightGCNSettings]] = LightGCNSettings

    def __init__(self, context: BuildContext, settings: LightGCNSettings) -> None:
        super().__init__()
        cfg = context.model_config
        device = context.features.device
        self.n_users, self.n_items = context.n_users, context.n_items
        self.settings = settings
        self.l2 = float(cfg.l2)
        self.encoder = context.encoder
        self.register_buffer("features", context.features.to(torch.float32), persistent=False)
        self.embedding = nn.Parameter(torch.randn(self.n_users + self.n_items, cfg.k_id, device=device) * cfg.init_std)
        self.register_buffer("adjacency", bipartite_adjacency(context.train, self.n_users, self.n_items, device),
                             persistent=False)
        self.adjacency: torch.Tensor

    @classmethod
    def build(cls, context: BuildContext) -> LightGCN:
        return cls(context, settings_from(context.model_config, cls.name, LightGCNSettings))

    def propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = propagate(self.adjacency, self.embedding, self.settings.n_layers)
        return out[: self.n_users], out[self.n_users:]

    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                             pool: NegativePool | None = None,
                             score_scale: torch.Tensor | None = None) -> torch.Tensor:
        u, i = self.propagated()
        pos, neg = pair_scores(u[users], i, pos_items, neg_items)
        if score_scale is not None:
            pos, neg = pos * score_scale, neg * score_scale.unsqueeze(1)
        return bpr_per_interaction(pos, neg)

    def example_regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        """0.5 * l2 * the squared norms of the batch's ego embeddings (users and positives), summed."""
        ego = torch.cat([self.embedding[users], self.embedding[self.n_users + pos_items]], dim=1)
        return 0.5 * self.l2 * ego.pow(2).sum()

    def shared_regularisation(self) -> torch.Tensor:
        return self.embedding.new_zeros(())

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u, i = self.propagated()
        return (u[users] * i[items]).sum(-1)

    def ranking_scorer(self) -> UserScorer:
        return chunked_scorer(*self.propagated())
