"""FREEDOM (Zhou & Shen, MM 2023): a frozen item-item kNN graph and a degree-sensitively pruned user-item graph.

- Item-item graph: per modality, the binary top-k cosine kNN graph of the feature block, symmetric-normalised;
  the modalities are averaged (``modality_weights`` to weigh them). It is frozen: built once from the features
  the model consumes (the masked ones when the encoder slot carries a mask), and rebuilt only when the slot
  changes. Item-graph embeddings h = A^L' q propagate the item ID embeddings q.
- User-item graph: each epoch keeps ``1 - edge_dropout`` of the training edges, sampled without replacement
  with probability proportional to 1 / sqrt(d_u d_i) (edges between popular nodes are pruned first), and runs
  LightGCN over the ID embeddings on what is kept. Ranking uses the full graph.
- Final item vector i + h, user vector u; loss BPR(u, i) + ``feature_weight`` * sum_m BPR(u, c_m), with c_m
  the encoder slot applied to modality m's block (the projected modality features of the paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from painvrl.errors import PainvrlInputError
from painvrl.model.common import modality_contents, settings_from
from painvrl.model.encoders import consumed_features
from painvrl.model.graphs import (
    bipartite_edges,
    degree_sensitive_prune,
    knn_neighbours,
    normalised_adjacency,
    propagate,
    symmetric_knn_weights,
)
from painvrl.model.neighbour_lists import NeighbourLists, neighbour_sum
from painvrl.model.propagated import PropagatedRecommender
from painvrl.model.recommender import BuildContext, NegativePool
from painvrl.model.sparse import SparseMatrix

PRUNE_STREAM = 0x66726565
"""Seed-stream tag of the per-epoch edge pruning draw."""


@dataclass(frozen=True)
class FreedomSettings:
    knn_k: int = 10
    """Neighbours per item in the frozen item-item graph (FREEDOM: 10)."""
    edge_dropout: float = 0.8
    """Fraction of the user-item edges pruned each epoch (FREEDOM searches 0.8 and 0.9)."""
    n_item_layers: int = 1
    """Propagation layers over the item-item graph (FREEDOM: 1)."""
    n_ui_layers: int = 2
    """LightGCN layers over the user-item graph (FREEDOM: 2)."""
    feature_weight: float = 0.01
    """Weight of the BPR terms between users and the projected modality features."""
    modality_weights: list[float] = field(default_factory=list)
    """Weight of each modality's kNN graph, in the data's modality order (empty: equal weights)."""


class FREEDOM(PropagatedRecommender):
    """``adjacency`` is the full user-item graph; ``pruned`` this epoch's pruned one (training only)."""

    name: ClassVar[str] = "freedom"
    settings_type: ClassVar[type[FreedomSettings]] = FreedomSettings
    settings: FreedomSettings
    edge_users: torch.Tensor
    edge_items: torch.Tensor

    def __init__(self, context: BuildContext, settings: FreedomSettings) -> None:
        if settings.modality_weights and len(settings.modality_weights) != len(context.modality_slices):
            raise PainvrlInputError(f"config field 'model.settings.freedom.modality_weights': has "
                                    f"{len(settings.modality_weights)} weights for the modalities "
                                    f"{list(context.modality_slices)}")
        super().__init__(context, settings, context.model_config.k_f)
        device = context.features.device
        users, items = bipartite_edges(context.train, self.n_users)
        self.register_buffer("edge_users", torch.as_tensor(users, device=device), persistent=False)
        self.register_buffer("edge_items", torch.as_tensor(items, device=device), persistent=False)
        self.pruned = self.graph
        self.item_graph: tuple[NeighbourLists, torch.Tensor]
        self.rebuild_feature_graph()

    @classmethod
    def build(cls, context: BuildContext) -> FREEDOM:
        return cls(context, settings_from(context.model_config, cls.name, FreedomSettings))

    def _pruned_adjacency(self, keep: torch.Tensor) -> SparseMatrix:
        users, items = self.edge_users[keep], self.edge_items[keep]
        adjacency = normalised_adjacency(torch.cat([users, items]), torch.cat([items, users]),
                                         self.n_users + self.n_items)
        return SparseMatrix(adjacency.to(self.embedding.dtype), symmetric=True)  # float64 after .double()

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Resample the pruned user-item graph from (seed, epoch)."""
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, PRUNE_STREAM, epoch])
                                                      .generate_state(1)[0]))
        keep = degree_sensitive_prune(self.edge_users.cpu(), self.edge_items.cpu() - self.n_users, self.n_users,
                                      self.n_items, 1.0 - self.settings.edge_dropout, generator)
        self.pruned = self._pruned_adjacency(keep.to(self.edge_users.device))
        self.clear_caches()

    def rebuild_feature_graph(self) -> None:
        """The frozen item-item graph from the features the encoder consumes (masked when it carries a mask)."""
        features = consumed_features(self.encoder, self.features)
        weights = self.settings.modality_weights or [1.0] * len(self.modality_slices)
        total = sum(weights)
        lists, values = [], []
        for weight, columns in zip(weights, self.modality_slices.values(), strict=True):
            indices, _ = knn_neighbours(features[:, columns], self.settings.knn_k)
            binary = torch.ones(indices.shape, dtype=torch.float32, device=indices.device)
            lists.append(indices)
            values.append(symmetric_knn_weights(indices, binary) * (weight / total))
        self.item_graph = (NeighbourLists(torch.cat(lists, dim=1)), torch.cat(values, dim=1))
        self.clear_caches()

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The pruned graph while training, the full graph otherwise (evaluation, ranking)."""
        return self.id_part("tables", lambda: self.propagate_over(self.pruned.matrix() if self.training
                                                                 else self.adjacency))

    def propagate_over(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embedding[self.n_users:]
        for _ in range(self.settings.n_item_layers):
            h = neighbour_sum(*self.item_graph, h)
        out = propagate(adjacency, self.embedding, self.settings.n_ui_layers)
        return out[: self.n_users], out[self.n_users:] + h

    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                             pool: NegativePool | None = None,
                             score_scale: torch.Tensor | None = None) -> torch.Tensor:
        user_table, item_table = self.representations()
        user_vecs = user_table[users]
        loss = self.bpr(user_vecs, item_table, pos_items, neg_items, score_scale, pool, offset=self)
        if self.settings.feature_weight > 0:
            negatives = neg_items.reshape(-1) if pool is None else pool[0]
            items = torch.unique(torch.cat([pos_items, negatives]))
            contents = modality_contents(self.encoder, self.features[items], self.modality_slices)
            lookup = torch.full((self.n_items,), -1, dtype=torch.long, device=items.device)
            lookup[items] = torch.arange(items.numel(), device=items.device)
            local_pool = None if pool is None else (lookup[pool[0]], pool[1])
            for content in contents.values():
                feature_loss = self.bpr(user_vecs, content, lookup[pos_items], lookup[neg_items], score_scale,
                                        local_pool)
                loss = loss + self.settings.feature_weight * feature_loss
        return loss
