"""VBPR (He & McAuley, AAAI 2016): matrix factorisation plus a projection of the item features, trained by BPR.

score(u, i) = <gamma_u, gamma_i> + <theta_u, E f_i>: the user vector [gamma_u ; theta_u] against the item
vector [gamma_i ; h_i] with h_i = encoder(f_i) (E is the encoder slot, a linear projection under ERM). The
visual bias term beta' f_i of the paper is left out, as in MMRec's VBPR. The score is linear in the content
vector, so the invariance methods use their batched closed forms on it.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from painvrl.model.common import bpr_per_interaction
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import BuildContext


class VBPR(LinearContentRecommender):
    """User table [gamma ; theta] (k_id + k_f), item-ID table gamma_i (k_id), encoder E (k_f)."""

    name: ClassVar[str] = "vbpr"

    @classmethod
    def build(cls, context: BuildContext) -> VBPR:
        m = context.model_config
        return cls(context.n_users, context.n_items, context.features, context.encoder, k_id=m.k_id, k_f=m.k_f,
                   init_std=m.init_std, l2=m.l2)

    def scores_loss(self, users: torch.Tensor, pos_items: torch.Tensor, pos_scores: torch.Tensor,
                    neg_items: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
        """[B] BPR of each positive against its negatives (mean over the negatives)."""
        return bpr_per_interaction(pos_scores, neg_scores)
