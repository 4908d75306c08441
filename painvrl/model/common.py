"""Helpers shared by the backbones: the multi-negative BPR loss, per-modality content through the encoder
slot, the backbone's settings section and chunked full-catalogue scoring."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from painvrl.config.coercion import build_section
from painvrl.model.recommender import NegativePool, UserScorer

S = TypeVar("S")


def settings_from(model_config: Any, name: str, settings_type: type[S]) -> S:
    """The backbone's hyperparameters: ``model.settings.<name>`` built into ``settings_type`` (its defaults for
    every field not given; an unknown field or a wrong type is an error naming ``model.settings.<name>.<field>``)."""
    values = (getattr(model_config, "settings", None) or {}).get(name, {})
    settings: S = build_section(settings_type, dict(values), f"model.settings.{name}")
    return settings


def bpr_per_interaction(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """BPR with several negatives: [B] = mean over the n_neg negatives of -log sigmoid(s_pos - s_neg).

    ``pos_scores`` [B], ``neg_scores`` [B, n_neg]. With one negative this is the BPR loss of Rendle et al.
    """
    return F.softplus(neg_scores - pos_scores.unsqueeze(1)).mean(dim=1)


def pair_scores(user_vecs: torch.Tensor, item_table: torch.Tensor, pos_items: torch.Tensor,
                neg_items: torch.Tensor, pool: NegativePool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot-product scores of the positives [B] and negatives [B, n_neg] of a batch of user vectors [B, k].

    With a shared pool (``neg_items == pool[positions]``) the negatives are read from one [B, P] product against
    the pool's rows: the same scores, but the gradient reaches P rows of ``item_table`` instead of B x n_neg.
    """
    pos = (user_vecs * item_table[pos_items]).sum(dim=1)
    if pool is not None:
        pool_items, positions = pool
        neg = torch.gather(user_vecs @ item_table[pool_items].T, 1, positions)
    else:
        neg = torch.einsum("bk,bnk->bn", user_vecs, item_table[neg_items])
    return pos, neg


def modality_contents(encoder: nn.Module, features: torch.Tensor,
                      modality_slices: dict[str, slice]) -> dict[str, torch.Tensor]:
    """Per-modality content through the encoder slot: c_m = encoder(f with every other modality block zeroed).

    With a linear bias-free slot (W f, or W (g * f) under a mask) c_m = W_m f_m is the projection of block m alone
    and the c_m sum to encoder(f); any other slot (the convert module) is applied to the single-block input the same
    way. A gate on a column therefore changes exactly the modality that column belongs to.
    """
    out = {}
    for name, columns in modality_slices.items():
        block = torch.zeros_like(features)
        block[:, columns] = features[:, columns]
        out[name] = encoder(block)
    return out


def chunked_scorer(user_table: torch.Tensor, item_table: torch.Tensor) -> UserScorer:
    """A scorer of every item for a batch of users from fixed (already propagated) tables."""
    def score(users: torch.Tensor) -> torch.Tensor:
        return user_table[users] @ item_table.T
    return score
