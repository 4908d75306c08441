"""The Recommender interface every backbone implements.

A backbone is built from the training graph and the item features, with an *encoder slot*: a module that maps
feature rows [b, d] to content vectors [b, k_f]. ERM fills the slot with a plain projection, mask learning with
a gated projection (g * f), the final PaInvRL model with the convert module. Everything the invariance methods
need is expressed through three calls, so ERM, per-environment risks, IRM penalties and HEI work for any model:

- ``per_interaction_loss(users, pos_items, neg_items) -> [B]``: the model's own loss (BCE, BPR, ...) of each
  (user, positive, negatives) example, not reduced;
- ``regularisation(users, pos_items) -> scalar``: the model's L2 / auxiliary terms for the batch;
- ``ranking_scorer() -> callable(users) -> [len(users), n_items]``: full-catalogue scores, with whatever a
  graph model needs (propagation) done once per call of ``ranking_scorer``.

Adding a backbone is one module that subclasses :class:`Recommender` plus one line in the ``MODELS`` dict of
:mod:`painvrl.model.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

UserScorer = Callable[[torch.Tensor], torch.Tensor]
"""Scores of every item for a batch of user ids: [len(users), n_items]."""


@dataclass(frozen=True)
class BuildContext:
    """What a backbone is built from (the same object on every rank, so random inits agree)."""

    n_users: int
    n_items: int
    train: np.ndarray
    """[N, 2] training positives (user, item), 0-based."""
    features: torch.Tensor
    """[n_items, d] float32 item features (modality blocks concatenated, each L2-normalised per row)."""
    modality_slices: dict[str, tuple[int, int]]
    """Column range [start, stop) of each modality block in ``features``."""
    encoder: nn.Module
    """The encoder slot: [b, d] -> [b, k_f]."""
    model_config: Any
    """The ``model`` section of the run config (painvrl.config.ModelConfig)."""


class Recommender(nn.Module, ABC):
    """A recommender with an encoder slot for the item features (see the module docstring)."""

    name: ClassVar[str]
    n_users: int
    n_items: int
    encoder: nn.Module
    features: torch.Tensor

    @classmethod
    @abstractmethod
    def build(cls, context: BuildContext) -> Recommender:
        """A freshly initialised model (the caller seeds torch before calling)."""

    @abstractmethod
    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor,
                             neg_items: torch.Tensor) -> torch.Tensor:
        """[B] loss of each example: ``users`` [B], ``pos_items`` [B], ``neg_items`` [B, n_neg]."""

    @abstractmethod
    def regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        """Scalar regularisation of the batch (added once to the mean of ``per_interaction_loss``)."""

    @abstractmethod
    def ranking_scorer(self) -> UserScorer:
        """A function scoring every item for a batch of users (call under ``torch.no_grad()``)."""

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch plus regularisation: the ERM objective."""
        return self.per_interaction_loss(users, pos_items, neg_items).mean() + self.regularisation(users, pos_items)

    def user_vectors(self) -> torch.Tensor:
        """[n_users, k] frozen user representation handed to environment identification (graph models return
        their propagated user embeddings)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose user vectors")

    def rebuild_feature_graph(self) -> None:
        """Rebuild whatever the model derives from the encoded features (an item-item graph). Called after the
        encoder slot changes (mask learning, the final model); a no-op for models without such a graph."""
