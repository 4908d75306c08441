"""The :class:`Objective` interface and ERM.

The training loop (painvrl/training/loop.py) asks an objective for this rank's share of the batch loss. Every
objective keeps the global-batch contract: the loss a rank returns is a sum over its slice divided by the GLOBAL
batch size (plus shared terms divided by the world size), so gradients summed over ranks equal the
single-process gradient of the whole batch. Objectives that need statistics of the whole batch (per-environment
losses) reduce detached values with the collective and keep the differentiable part rank-local.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from painvrl.config import Config
from painvrl.data.dataset import InteractionData
from painvrl.distributed.collective import Collective
from painvrl.model.recommender import Recommender


@dataclass(frozen=True)
class Batch:
    """This rank's slice of one global batch."""

    rows: torch.Tensor
    """[b] indices of the slice's positives in the training pairs."""
    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor
    """[b, n_neg] (equal to ``pool[pool_positions]`` when a pool is given)."""
    global_size: int
    world_size: int
    pool: torch.Tensor | None = None
    pool_positions: torch.Tensor | None = None


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective is built from: the resolved config, the data, and (for objectives over environments)
    the environment label of every training positive."""

    config: Config
    data: InteractionData
    device: torch.device
    env_labels: np.ndarray | None = None
    n_envs: int = 1


class Objective:
    """ERM: the mean of the backbone's per-example losses plus its regularisation."""

    name: ClassVar[str] = "erm"

    def per_example(self, model: Recommender, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-example losses [b], the slice's example regularisation) of the backbone."""
        pool = (batch.pool, batch.pool_positions) \
            if batch.pool is not None and batch.pool_positions is not None else None
        return model.loss_terms(batch.users, batch.pos_items, batch.neg_items, pool=pool)

    def batch_loss(self, model: Recommender, batch: Batch, collective: Collective) -> torch.Tensor:
        """This rank's share of the global batch objective."""
        per_example, example_reg = self.per_example(model, batch)
        return self.total(model, batch, per_example.sum() + example_reg)

    @staticmethod
    def total(model: Recommender, batch: Batch, example_sum: torch.Tensor) -> torch.Tensor:
        """``example_sum`` over the global batch size plus the shared regularisation's share of this rank."""
        return example_sum / batch.global_size + model.shared_regularisation() / batch.world_size

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the objective itself (none for ERM)."""
        return []

    def start_epoch(self, epoch: int) -> None:
        """Called before every epoch (schedules)."""

    def state_dict(self) -> dict[str, Any]:
        """What resuming a run needs besides the model (GroupDRO's weights)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def summary(self) -> dict[str, Any]:
        """What metrics.json records about the objective after training."""
        return {}


ObjectiveFactory = Callable[[ObjectiveContext], Objective]


def erm(context: ObjectiveContext) -> Objective:
    del context
    return Objective()
