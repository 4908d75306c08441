"""MMGCN (Wei et al., MM 2019): one user-item graph convolution per modality, summed.

For each modality m the graph's nodes start as x^0 = [U_m ; c_m]: a learned user preference table U_m and the
item content c_m, the encoder slot applied to modality m's feature block alone (so a mask on a column changes
exactly its modality). Each layer aggregates the mean of the neighbours and combines it with the node's own
representation and its ID embedding:

    x^{l+1} = leaky_relu(A_mean x^l W_l) + leaky_relu(x^l G_l) + e_id

The user and item representations are the mean over modalities of x^L; score(u, i) = <x_u, x_i>, trained by
BPR. The ID embeddings e_id are trained parameters (MMRec's MMGCN leaves them untrained because they are
plain tensors there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from painvrl.model.common import modality_contents, settings_from
from painvrl.model.propagated import PropagatedRecommender
from painvrl.model.recommender import BuildContext


@dataclass(frozen=True)
class MMGCNSettings:
    n_layers: int = 2
    """Graph convolution layers per modality (MMGCN: 2)."""


class MMGCN(PropagatedRecommender):
    """The ID embeddings are ``embedding``; aggregation is the mean over neighbours (row-normalised graph)."""

    name: ClassVar[str] = "mmgcn"
    settings_type: ClassVar[type[MMGCNSettings]] = MMGCNSettings
    settings: MMGCNSettings

    def __init__(self, context: BuildContext, settings: MMGCNSettings) -> None:
        m = context.model_config
        k = m.k_f
        super().__init__(context, settings, k, norm="row")
        self.preferences = nn.ParameterDict({name: nn.Parameter(torch.randn(self.n_users, k) * m.init_std)
                                             for name in self.modality_slices})
        self.aggregate = nn.ModuleDict({name: nn.ModuleList(nn.Linear(k, k, bias=False)
                                                            for _ in range(settings.n_layers))
                                        for name in self.modality_slices})
        self.combine = nn.ModuleDict({name: nn.ModuleList(nn.Linear(k, k) for _ in range(settings.n_layers))
                                      for name in self.modality_slices})

    @classmethod
    def build(cls, context: BuildContext) -> MMGCN:
        return cls(context, settings_from(context.model_config, cls.name, MMGCNSettings))

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [n_users, k], items [n_items, k]): the mean over modalities of each modality's last layer."""
        contents = modality_contents(self.encoder, self.features, self.modality_slices)
        total = torch.zeros_like(self.embedding)
        for name, content in contents.items():
            x = F.normalize(torch.cat([self.preferences[name], content]), dim=1)
            layers = zip(cast(nn.ModuleList, self.aggregate[name]), cast(nn.ModuleList, self.combine[name]),
                         strict=True)
            for aggregate, combine in layers:
                neighbours = F.leaky_relu(aggregate(self.graph(x)))
                x = neighbours + F.leaky_relu(combine(x)) + self.embedding
            total = total + x
        total = total / max(len(contents), 1)
        return total[: self.n_users], total[self.n_users:]

    def example_regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        """0.5 * l2 * the squared norms of the batch's ID embeddings and user preferences, summed."""
        rows = [self.embedding[users], self.embedding[self.n_users + pos_items],
                *(table[users] for table in self.preferences.values())]
        return 0.5 * self.l2 * sum((r.pow(2).sum() for r in rows), self.embedding.new_zeros(()))
