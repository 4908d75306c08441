"""BM3 (Zhou et al., WWW 2023): bootstrapped multimodal recommendation, trained without negative sampling.

LightGCN over the user-item graph gives u and i from the ID embeddings (plus the item ID embedding itself,
``item_residual``); the encoder slot gives each modality's
content c_m (the slot applied to modality m's block). A shared predictor p (linear) maps them to "online"
vectors; the targets are dropout-perturbed copies, detached. Per interaction (u, i):

    l = (1 - cos(p(u), sg(drop(i)))) + (1 - cos(p(i), sg(drop(u))))
        + cl_weight * sum_m [ (1 - cos(p(c_m,i), sg(drop(i)))) + (1 - cos(p(c_m,i), sg(drop(c_m,i)))) ]

and score(u, i) = <p(u), p(i)> for ranking. The sampled negatives of the training loop are ignored (BM3 needs
none). The dropout draws come from torch's global generator, which the training loop seeds.

Picked as the current state-of-the-art backbone because it is the strongest published model on our TikTok
split after DiffMM (Recall@20 0.0957), it consumes the item features through one projection per modality
(which is where the invariant mask acts), and it has no negative sampling, so it also tests that the
invariance methods do not assume a pairwise loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from painvrl.model.common import modality_contents, settings_from
from painvrl.model.graphs import propagate
from painvrl.model.propagated import PropagatedRecommender
from painvrl.model.recommender import BuildContext, NegativePool


@dataclass(frozen=True)
class BM3Settings:
    n_layers: int = 1
    """LightGCN layers (BM3 searches 1 and 2)."""
    dropout: float = 0.5
    """Dropout of the target vectors (BM3 searches 0.3 and 0.5)."""
    cl_weight: float = 2.0
    """Weight of the multimodal alignment terms."""
    item_residual: bool = False
    """Add the item ID embeddings to the propagated item vectors (i + q). Off: on TikTok's validation split
    it lowers Recall@20 at every dropout and depth tried (docs/results.md)."""


def _distance(online: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    cos = F.cosine_similarity(online, target.detach(), dim=-1)
    return 1.0 - (cos if scale is None else scale * cos)


class BM3(PropagatedRecommender):
    """:meth:`representations` are the predictor's online vectors; the loss reads the propagated ones."""

    reads_logit_offset: ClassVar[bool] = False
    """BM3 trains on embedding distances, with no pair logit for a popularity term."""

    name: ClassVar[str] = "bm3"
    settings_type: ClassVar[type[BM3Settings]] = BM3Settings
    settings: BM3Settings

    def __init__(self, context: BuildContext, settings: BM3Settings) -> None:
        super().__init__(context, settings, context.model_config.k_f)
        m = context.model_config
        self.predictor = nn.Linear(m.k_f, m.k_f)
        nn.init.xavier_normal_(self.predictor.weight)

    @classmethod
    def build(cls, context: BuildContext) -> BM3:
        return cls(context, settings_from(context.model_config, cls.name, BM3Settings))

    def propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.id_part("propagated", self._propagate)

    def _propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = propagate(self.adjacency, self.embedding, self.settings.n_layers)
        items = out[self.n_users:]
        if self.settings.item_residual:
            items = items + self.embedding[self.n_users:]
        return out[: self.n_users], items

    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                             pool: NegativePool | None = None,
                             score_scale: torch.Tensor | None = None) -> torch.Tensor:
        user_table, item_table = self.propagated()
        u, i = user_table[users], item_table[pos_items]
        drop = self.settings.dropout if self.training else 0.0
        u_target, i_target = F.dropout(u, drop), F.dropout(i, drop)
        loss = _distance(self.predictor(u), i_target, score_scale) + _distance(self.predictor(i), u_target,
                                                                               score_scale)
        contents = modality_contents(self.encoder, self.features[pos_items], self.modality_slices)
        for content in contents.values():
            online = self.predictor(content)
            alignment = _distance(online, i_target, score_scale) + _distance(online, F.dropout(content, drop),
                                                                             score_scale)
            loss = loss + self.settings.cl_weight * alignment
        return loss

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_table, item_table = self.propagated()
        return self.predictor(user_table), self.predictor(item_table)
