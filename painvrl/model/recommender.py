"""The Recommender interface every backbone implements.

A backbone is built from the training graph and the item features, with an *encoder slot*: a module that maps
feature rows [b, d] to content vectors [b, k_f]. ERM fills the slot with a plain projection and the final
PaInvRL model with the convert module over the learned mask. What the methods need is expressed through a few
calls:

- ``per_interaction_loss(users, pos_items, neg_items) -> [B]``: the model's own loss (BCE, BPR, ...) of each
  (user, positive, negatives) example, not reduced; ``score_scale`` multiplies each example's scores first
  (IRMv1's dummy classifier), ``pool`` says that the negatives were drawn from a shared pool (a speed hint);
- ``example_regularisation(users, pos_items) -> scalar``: the L2 of the batch's rows, summed over the batch;
  ``shared_regularisation() -> scalar``: the L2 of parameters every example shares (the encoder's);
- ``score_pairs(users, items) -> [B]`` and ``ranking_scorer() -> callable(users) -> [len(users), n_items]``:
  pair scores and full-catalogue scores, with whatever a graph model needs (propagation) done once per call of
  ``ranking_scorer``;
- ``score_factors() -> (users, items)``: factors whose dot product is the ranking score, which environment
  identification and mask learning read as the backbone's frozen pair score (painvrl/invariance/feature_path.py);
- ``frozen_with_encoder(encoder)``: a frozen copy of the model whose encoder slot is replaced (the mask model's
  copy of a feature path trains only the new slot).

Adding a backbone is one module that subclasses :class:`Recommender` (or :class:`LinearContentRecommender` when
its score is linear in the content vector) plus one line in the ``MODELS`` dict of
:mod:`painvrl.model.registry`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from painvrl.errors import PainvrlInputError

UserScorer = Callable[[torch.Tensor], torch.Tensor]
"""Scores of every item for a batch of user ids: [len(users), n_items]."""

NegativePool = tuple[torch.Tensor, torch.Tensor]
"""(pool [P], positions [B, n_neg]) with ``neg_items == pool[positions]``."""


@dataclass(frozen=True)
class BuildContext:
    """What a backbone is built from (the same object on every rank, so random inits agree)."""

    n_users: int
    n_items: int
    train: np.ndarray
    """[N, 2] training positives (user, item), 0-based."""
    features: torch.Tensor
    """[n_items, d] float32 item features (modality blocks concatenated, each L2-normalised per row)."""
    modality_slices: dict[str, slice]
    """Column range of each modality block in ``features``."""
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
    l2: float
    """L2 weight of the model's regularisation (also applied to the slot encoders of the invariance methods)."""
    settings_type: ClassVar[type[Any] | None] = None
    """The dataclass of the backbone's own hyperparameters, ``model.settings.<name>`` (None: it has none)."""
    consumes_features: ClassVar[bool] = True
    """False for an ID-only backbone (lightgcn): a feature mask cannot change it, so the invariance methods
    train it as ERM does."""
    reads_logit_offset: ClassVar[bool] = False
    """True when the model's training loss adds :attr:`item_logit_offset` to its pair scores (method ``pda``
    refuses a backbone without it: a loss without pair scores, like BM3's, has no logit to adjust)."""
    item_logit_offset: torch.Tensor | None = None
    """[n_items] added to every training logit of each item (positives and negatives) while set, never to a
    ranking score: the popularity term of method ``pda``. None outside such a method's training steps."""
    sparse_gradients: bool = False
    """Set by the training loop: compute row-sparse gradients for :meth:`sparse_tables` (lazy Adam)."""

    @classmethod
    @abstractmethod
    def build(cls, context: BuildContext) -> Recommender:
        """A freshly initialised model (the caller seeds torch before calling)."""

    @abstractmethod
    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                             pool: NegativePool | None = None,
                             score_scale: torch.Tensor | None = None) -> torch.Tensor:
        """[B] loss of each example: ``users`` [B], ``pos_items`` [B], ``neg_items`` [B, n_neg]; ``score_scale``
        [B] multiplies the example's positive and negative scores before the loss."""

    @abstractmethod
    def example_regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        """Scalar: the regularisation of the batch's own rows (embeddings), summed over the batch."""

    @abstractmethod
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B] scores of the pairs (users[j], items[j])."""

    @abstractmethod
    def ranking_scorer(self) -> UserScorer:
        """A function scoring every item for a batch of users (call under ``torch.no_grad()``)."""

    def shared_regularisation(self) -> torch.Tensor:
        """Scalar: the L2 of the encoder slot's parameters (shared by every example)."""
        total = self.features.new_zeros(())
        for param in self.encoder.parameters():
            total = total + param.pow(2).sum()
        return self.l2 * total

    def loss_terms(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                   pool: NegativePool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-example losses [B], example regularisation summed over the batch) of one batch; a model may
        override it to share work between the two."""
        return (self.per_interaction_loss(users, pos_items, neg_items, pool=pool),
                self.example_regularisation(users, pos_items))

    def regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        """Regularisation of a batch: the mean of the example terms plus the shared terms."""
        return self.example_regularisation(users, pos_items) / users.shape[0] + self.shared_regularisation()

    def offset_logits(self, pos_items: torch.Tensor, neg_items: torch.Tensor, pos_scores: torch.Tensor,
                      neg_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training pair scores with :attr:`item_logit_offset` added (unchanged while it is None)."""
        offset = self.item_logit_offset
        if offset is None:
            return pos_scores, neg_scores
        return pos_scores + offset[pos_items], neg_scores + offset[neg_items]

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch plus regularisation: the ERM objective."""
        per_example, example_reg = self.loss_terms(users, pos_items, neg_items)
        return per_example.mean() + example_reg / users.shape[0] + self.shared_regularisation()

    def sparse_tables(self) -> list[nn.Parameter]:
        """Embedding tables that get row-sparse gradients when :attr:`sparse_gradients` is set (none by
        default: a graph model's propagation touches every row)."""
        return []

    def without_item_ids(self) -> Recommender:
        """This model with its item-ID embeddings zeroed (``mask.use_item_ids=false``), in place."""
        raise PainvrlInputError(f"config field 'mask.use_item_ids': false needs a model with an item-ID table; "
                                f"model {self.name!r} has none")

    def score_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(users [n_users, k], items [n_items, k]) with score(u, i) = <users[u], items[i]> as the model ranks
        (evaluation mode, detached), or None when the score is not such a product. The invariance methods use
        it as the frozen backbone's pair score (painvrl/invariance/feature_path.py)."""
        return None

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Called by the training loop before each epoch: a model that resamples or rebuilds a graph once per
        epoch (edge pruning, a learned item graph) does it here, drawing only from (seed, epoch) so every rank
        and every re-run makes the same draw. A no-op by default."""

    def clear_caches(self) -> None:
        """Drop whatever the model caches between forwards (a graph built from the encoder's output). A no-op by
        default."""

    def rebuild_feature_graph(self) -> None:
        """Rebuild whatever the model derives from the encoded features (an item-item graph). Called after the
        encoder slot changes; a no-op for models without such a graph."""

    def frozen_with_encoder(self, encoder: nn.Module) -> Recommender:
        """A copy of this model with ``encoder`` in its slot and every other parameter frozen.

        Buffers (features, graphs, degree weights) are shared with this model, parameters are copied, and
        ``encoder`` itself is used as given (not copied), so training it trains the copy.
        """
        self.clear_caches()
        memo: dict[int, Any] = {id(buffer): buffer for buffer in self.buffers()}
        memo[id(self.encoder)] = encoder
        view = copy.deepcopy(self, memo)
        encoder_params = {id(p) for p in encoder.parameters()}
        for param in view.parameters():
            if id(param) not in encoder_params:
                param.requires_grad_(False)
        view.sparse_gradients = False
        view.rebuild_feature_graph()
        return view
