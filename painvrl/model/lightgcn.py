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

from painvrl.model.common import settings_from
from painvrl.model.graphs import propagate
from painvrl.model.propagated import PropagatedRecommender
from painvrl.model.recommender import BuildContext


@dataclass(frozen=True)
class LightGCNSettings:
    n_layers: int = 3
    """Propagation layers (LightGCN paper: 3; MMRec searches 1-4)."""


class LightGCN(PropagatedRecommender):
    name: ClassVar[str] = "lightgcn"
    settings_type: ClassVar[type[LightGCNSettings]] = LightGCNSettings
    settings: LightGCNSettings
    consumes_features: ClassVar[bool] = False

    @classmethod
    def build(cls, context: BuildContext) -> LightGCN:
        return cls(context, settings_from(context.model_config, cls.name, LightGCNSettings),
                   context.model_config.k_id)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.id_part("propagated", lambda: propagate(self.adjacency, self.embedding, self.settings.n_layers))
        return out[: self.n_users], out[self.n_users:]

    def shared_regularisation(self) -> torch.Tensor:
        return self.embedding.new_zeros(())
