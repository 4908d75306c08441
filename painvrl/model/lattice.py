"""LATTICE (Zhang et al., MM 2021): a learned item-item graph mixed into a LightGCN recommender.

Per modality m, two top-k cosine kNN graphs over the items: S_m from the raw features (fixed at build time,
and rebuilt from the masked features when the encoder slot changes) and L_m from the learned content c_m =
encoder(block m), the encoder slot applied to modality m's features. They are mixed as
A_m = (1 - lambda) L_m + lambda S_m, each symmetric-normalised, and the modalities as A = sum_m softmax(w)_m A_m.
Item-graph embeddings h = A^L' q propagate the item ID embeddings q over A; the user-item part is LightGCN over
the ID embeddings. Final item vector i + normalise(h), user vector u, score <u, i>, BPR loss.

L_m is rebuilt at the first step of each epoch with gradients into the encoder (through the kNN similarity
values) and reused, detached, by the epoch's other steps, as in the authors' code. A frozen copy whose slot is
being trained (mask learning, environment models) needs the gradient at every step: it recomputes L_m's
similarity values at every forward, and its neighbour lists whenever the slot's graph key changes (once per
epoch of those phases, and before each relabelling), since the top-k search is the expensive part. The graphs
are neighbour lists [n_items, k] (products over them are CSR products, painvrl.model.neighbour_lists), so memory
is O(items x k); building them takes one [chunk, items] similarity block at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from painvrl.model.common import modality_contents, settings_from
from painvrl.model.encoders import GraphKey, consumed_features, graph_key
from painvrl.model.graphs import knn_neighbours, propagate, symmetric_knn_weights
from painvrl.model.neighbour_lists import NeighbourLists, neighbour_sum, pair_dots
from painvrl.model.propagated import PropagatedRecommender
from painvrl.model.recommender import BuildContext, Recommender, UserScorer


@dataclass(frozen=True)
class LatticeSettings:
    knn_k: int = 10
    """Neighbours per item in the item-item graphs (LATTICE: 10)."""
    lambda_coeff: float = 0.9
    """Weight of the feature graph S_m against the learned graph L_m (LATTICE: 0.9)."""
    n_item_layers: int = 1
    """Propagation layers over the item-item graph (LATTICE: 1)."""
    n_ui_layers: int = 2
    """LightGCN layers over the user-item graph."""


def cosine_knn(x: torch.Tensor, k: int, lists: NeighbourLists | None = None) -> tuple[NeighbourLists, torch.Tensor]:
    """Top-k cosine neighbour lists of the rows of ``x`` (or the given lists) with differentiable similarities."""
    if lists is None:
        lists = NeighbourLists(knn_neighbours(x.detach(), k)[0])
    return lists, pair_dots(lists, F.normalize(x, dim=1))


class LATTICE(PropagatedRecommender):
    name: ClassVar[str] = "lattice"
    settings_type: ClassVar[type[LatticeSettings]] = LatticeSettings
    settings: LatticeSettings

    def __init__(self, context: BuildContext, settings: LatticeSettings) -> None:
        super().__init__(context, settings, context.model_config.k_f)
        self.modality_weight = nn.Parameter(torch.zeros(len(self.modality_slices)))
        self.feature_graphs: dict[str, tuple[NeighbourLists, torch.Tensor]] = {}
        self._learned: dict[str, tuple[NeighbourLists, torch.Tensor]] | None = None
        self.reuse_learned_graph = True
        """Reuse L_m within an epoch (training the backbone); a frozen copy whose slot is being trained
        recomputes it at every forward, since the slot reaches the loss only through L_m."""
        self._neighbours: dict[GraphKey, dict[str, NeighbourLists]] = {}
        """L_m's neighbour lists by the slot's graph key they were searched under (frozen copies; the newest
        generation only)."""
        self.rebuild_feature_graph()

    @classmethod
    def build(cls, context: BuildContext) -> LATTICE:
        return cls(context, settings_from(context.model_config, cls.name, LatticeSettings))

    def rebuild_feature_graph(self) -> None:
        """S_m from the features the encoder consumes (masked when the slot carries a mask)."""
        features = consumed_features(self.encoder, self.features)
        self.feature_graphs = {}
        for name, columns in self.modality_slices.items():
            indices, sims = knn_neighbours(features[:, columns], self.settings.knn_k)
            self.feature_graphs[name] = (NeighbourLists(indices), symmetric_knn_weights(indices, sims))
        self.clear_caches()

    def start_epoch(self, epoch: int, seed: int) -> None:
        self.clear_caches()

    def clear_caches(self) -> None:
        super().clear_caches()
        self._learned = None
        self._neighbours = {}

    def frozen_with_encoder(self, encoder: nn.Module) -> Recommender:
        view = super().frozen_with_encoder(encoder)
        assert isinstance(view, LATTICE)
        view.reuse_learned_graph = False
        return view

    def learned_graphs(self) -> dict[str, tuple[NeighbourLists, torch.Tensor]]:
        """L_m per modality: rebuilt (with gradients) when none is cached, else the cached graph, detached; a
        frozen copy keeps the neighbour lists of its slot's graph key and recomputes the similarities."""
        if self._learned is not None and self.reuse_learned_graph:
            return {name: (idx, w.detach()) for name, (idx, w) in self._learned.items()}
        contents = modality_contents(self.encoder, self.features, self.modality_slices)
        key = None if self.reuse_learned_graph else graph_key(self.encoder)
        known = self._neighbours.get(key, {}) if key is not None else {}
        graphs = {}
        for name, content in contents.items():
            lists, sims = cosine_knn(content, self.settings.knn_k, known.get(name))
            graphs[name] = (lists, symmetric_knn_weights(lists.indices, sims))
        if key is not None and not known:
            self._neighbours = {old: kept for old, kept in self._neighbours.items() if old[0] >= key[0]}
            self._neighbours[key] = {name: lists for name, (lists, _) in graphs.items()}
        self._learned = graphs
        return graphs

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego_items = self.embedding[self.n_users:]
        weights = torch.softmax(self.modality_weight, dim=0)
        lam = self.settings.lambda_coeff
        graph_items = torch.zeros_like(ego_items)
        for weight, (name, (learned_lists, learned_w)) in zip(weights, self.learned_graphs().items(), strict=True):
            fixed_lists, fixed_w = self.feature_graphs[name]
            h = ego_items
            for layer in range(self.settings.n_item_layers):
                if layer == 0:  # S_m q reads only the ID embeddings and a fixed graph
                    fixed = self.id_part(f"feature_graph:{name}", partial(neighbour_sum, fixed_lists, fixed_w, h))
                else:
                    fixed = neighbour_sum(fixed_lists, fixed_w, h)
                h = (1.0 - lam) * neighbour_sum(learned_lists, learned_w, h) + lam * fixed
            graph_items = graph_items + weight * h
        out = self.id_part("user_item", lambda: propagate(self.adjacency, self.embedding, self.settings.n_ui_layers))
        return out[: self.n_users], out[self.n_users:] + F.normalize(graph_items, dim=1)

    def ranking_scorer(self) -> UserScorer:
        self._learned = None  # rank with the graph of the current encoder
        scorer = super().ranking_scorer()
        self._learned = None
        return scorer

    def score_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._learned = None  # the graph of the current encoder, as ranking uses it
        factors = super().score_factors()
        self._learned = None
        return factors
