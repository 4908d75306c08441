"""Backbones that score from tables computed over the whole user-item graph: score(u, i) = <U_u, I_i> with
(U, I) = :meth:`PropagatedRecommender.representations`, recomputed at every forward (graph propagation touches
every row, so there is no per-batch shortcut) and once per ranking.

The shared parts: the ID embedding table over users then items, the normalised user-item adjacency, BPR over
the sampled negatives, and the L2 of the batch's ego embeddings.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from painvrl.model.common import bpr_per_interaction, chunked_scorer, pair_scores
from painvrl.model.graphs import bipartite_adjacency
from painvrl.model.recommender import BuildContext, NegativePool, Recommender, UserScorer
from painvrl.model.sparse import SparseMatrix

T = TypeVar("T")


class PropagatedRecommender(Recommender):

    reads_logit_offset: ClassVar[bool] = True

    def __init__(self, context: BuildContext, settings: Any, embedding_dim: int, norm: str = "sym") -> None:
        super().__init__()
        m = context.model_config
        self.n_users, self.n_items, self.l2, self.settings = context.n_users, context.n_items, float(m.l2), settings
        self.encoder = context.encoder
        self.modality_slices = dict(context.modality_slices)
        self.register_buffer("features", context.features.to(torch.float32), persistent=False)
        self.graph = SparseMatrix(bipartite_adjacency(context.train, self.n_users, self.n_items,
                                                      context.features.device, norm), symmetric=norm == "sym")
        self.embedding = nn.Parameter(torch.randn(self.n_users + self.n_items, embedding_dim) * m.init_std)
        self._id_parts: dict[tuple[Any, ...], Any] = {}

    def id_part(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()``: a part of the representations that reads only the ID embeddings and fixed graphs.

        In a frozen copy (mask learning, HEI's environment models) the ID embeddings do not train, so that part
        is the same at every step: it is computed once per training/eval mode and kept until
        :meth:`clear_caches` (which graph rebuilds and :meth:`start_epoch` call). A model whose ID embeddings
        train recomputes it at every forward.
        """
        if self.embedding.requires_grad:
            return compute()
        key = (name, self.training, self.embedding.dtype, self.embedding._version)
        if key not in self._id_parts:
            with torch.no_grad():
                self._id_parts[key] = compute()
        return self._id_parts[key]

    def clear_caches(self) -> None:
        self._id_parts = {}

    @property
    def adjacency(self) -> torch.Tensor:
        """The normalised user-item graph (CSR, on the model's device)."""
        return self.graph.matrix()

    @abstractmethod
    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [n_users, k], items [n_items, k]) of the current parameters and encoder slot."""

    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                             pool: NegativePool | None = None,
                             score_scale: torch.Tensor | None = None) -> torch.Tensor:
        user_table, item_table = self.representations()
        return self.bpr(user_table[users], item_table, pos_items, neg_items, score_scale, pool, offset=self)

    @staticmethod
    def bpr(user_vecs: torch.Tensor, item_table: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
            score_scale: torch.Tensor | None, pool: NegativePool | None = None, *,
            offset: Recommender | None = None) -> torch.Tensor:
        """[B] BPR of user vectors against the positives' and negatives' rows of ``item_table``; ``offset``
        (the model, when the rows are its items) adds its :attr:`~Recommender.item_logit_offset`."""
        pos, neg = pair_scores(user_vecs, item_table, pos_items, neg_items, pool)
        if offset is not None:
            pos, neg = offset.offset_logits(pos_items, neg_items, pos, neg)
        if score_scale is not None:
            pos, neg = pos * score_scale, neg * score_scale.unsqueeze(1)
        return bpr_per_interaction(pos, neg)

    def example_regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        """0.5 * l2 * the squared norms of the batch's ego embeddings (users and positives), summed."""
        ego = torch.cat([self.embedding[users], self.embedding[self.n_users + pos_items]], dim=1)
        return 0.5 * self.l2 * ego.pow(2).sum()

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        user_table, item_table = self.representations()
        return (user_table[users] * item_table[items]).sum(-1)

    def ranking_scorer(self) -> UserScorer:
        return chunked_scorer(*self.representations())

    @torch.no_grad()
    def score_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = self.training
        self.eval()
        try:
            users, items = self.representations()
        finally:
            self.train(was_training)
        return users.detach().clone(), items.detach().clone()
