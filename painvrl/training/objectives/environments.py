"""Objectives over environments: GroupDRO (``dro``) and V-REx (``vrex``), with the environments HEI identifies.

Both see one loss per environment, L_e = the mean per-example loss of the batch's positives in environment e
(environments absent from a batch are left out of that step).

- GroupDRO (Sagawa et al., ICLR 2020) minimises the worst environment's loss through weights q on the simplex
  updated by exponentiated gradient after every batch: q_e <- q_e * exp(eta * L_e), renormalised; the step
  minimises sum_e q_e L_e.
- V-REx (Krueger et al., ICML 2021) minimises mean_e L_e + beta * Var_e(L_e): risks that differ across
  environments are penalised, so the model relies on what predicts equally well everywhere. (The paper sums the
  risks; the mean keeps ERM's scale, which only rescales beta and the learning rate.)

Under data parallelism the L_e are global: per-environment loss sums and counts are summed over ranks
(detached), and each rank back-propagates sum_e c_e * (its own loss sum in e) / n_e with the coefficients
c_e = dObjective/dL_e computed from the global values, so the summed gradient is the exact gradient of the
global objective.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from painvrl.distributed.collective import Collective
from painvrl.errors import PainvrlInputError
from painvrl.model.recommender import Recommender
from painvrl.training.objectives.base import Batch, Objective, ObjectiveContext


def dro_update(weights: torch.Tensor, losses: torch.Tensor, present: torch.Tensor, step_size: float) -> torch.Tensor:
    """GroupDRO's step: q_e * exp(eta * L_e) for the environments present in the batch, renormalised."""
    logits = torch.log(weights) + step_size * torch.where(present, losses, torch.zeros_like(losses))
    return torch.softmax(logits, dim=0)


def vrex_coefficients(losses: torch.Tensor, present: torch.Tensor, weight: float) -> tuple[torch.Tensor, float]:
    """(dObjective/dL_e [E], objective value) of mean_e L_e + weight * Var_e L_e over the present environments."""
    count = int(present.sum())
    present_losses = losses[present]
    mean = present_losses.mean()
    variance = (present_losses - mean).pow(2).mean()
    coefficients = torch.zeros_like(losses)
    coefficients[present] = 1.0 / count + weight * 2.0 / count * (present_losses - mean)
    return coefficients, float(mean + weight * variance)


class EnvironmentObjective(Objective):
    """Shared part: per-environment losses of a batch, global over ranks."""

    def __init__(self, labels: np.ndarray, n_envs: int, device: torch.device) -> None:
        self.labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        self.n_envs = n_envs
        self.last_losses = torch.zeros(n_envs, device=device)
        """The global per-environment losses of the latest batch (0 for environments it lacked)."""

    def environment_losses(self, model: Recommender, batch: Batch, collective: Collective
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(this rank's per-environment loss sums [E] (differentiable), global counts [E], global mean losses
        [E] (detached), present [E] bool, this rank's example regularisation)."""
        per_example, example_reg = self.per_example(model, batch)
        envs = self.labels[batch.rows]
        local_sums = per_example.new_zeros(self.n_envs).index_add(0, envs, per_example)
        counts = torch.bincount(envs, minlength=self.n_envs).to(per_example.dtype)
        reduced = collective.all_reduce_sum(torch.cat([local_sums.detach(), counts]))
        global_sums, global_counts = reduced[: self.n_envs], reduced[self.n_envs:]
        present = global_counts > 0
        losses = global_sums / global_counts.clamp(min=1.0)
        self.last_losses = losses
        return local_sums, global_counts.clamp(min=1.0), losses, present, example_reg

    def weighted(self, model: Recommender, batch: Batch, coefficients: torch.Tensor, local_sums: torch.Tensor,
                 counts: torch.Tensor, example_reg: torch.Tensor) -> torch.Tensor:
        """This rank's share: sum_e c_e * local_sum_e / n_e plus the regularisation's share."""
        environments = (coefficients * local_sums / counts).sum()
        return environments + example_reg / batch.global_size + model.shared_regularisation() / batch.world_size


class GroupDROObjective(EnvironmentObjective):
    name = "dro"

    def __init__(self, labels: np.ndarray, n_envs: int, device: torch.device, step_size: float) -> None:
        super().__init__(labels, n_envs, device)
        self.step_size = step_size
        self.weights = torch.full((n_envs,), 1.0 / n_envs, device=device)

    def batch_loss(self, model: Recommender, batch: Batch, collective: Collective) -> torch.Tensor:
        local_sums, counts, losses, present, example_reg = self.environment_losses(model, batch, collective)
        self.weights = dro_update(self.weights, losses, present, self.step_size)
        coefficients = torch.where(present, self.weights, torch.zeros_like(self.weights))
        return self.weighted(model, batch, coefficients, local_sums, counts, example_reg)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = state["weights"].to(self.weights.device)

    def summary(self) -> dict[str, Any]:
        return {"environment_weights": [float(w) for w in self.weights],
                "environment_losses": [float(x) for x in self.last_losses]}


class VREXObjective(EnvironmentObjective):
    name = "vrex"

    def __init__(self, labels: np.ndarray, n_envs: int, device: torch.device, weight: float,
                 warmup_epochs: int) -> None:
        super().__init__(labels, n_envs, device)
        self.weight, self.warmup_epochs, self.current_weight = weight, warmup_epochs, weight

    def start_epoch(self, epoch: int) -> None:
        self.current_weight = 0.0 if epoch < self.warmup_epochs else self.weight

    def batch_loss(self, model: Recommender, batch: Batch, collective: Collective) -> torch.Tensor:
        local_sums, counts, losses, present, example_reg = self.environment_losses(model, batch, collective)
        coefficients, value = vrex_coefficients(losses, present, self.current_weight)
        loss = self.weighted(model, batch, coefficients, local_sums, counts, example_reg)
        # The surrogate's gradient is exact; shift its value (a constant) so the logged loss is the objective's.
        surrogate = float((coefficients * losses).sum())
        return loss + (value - surrogate) / batch.world_size

    def summary(self) -> dict[str, Any]:
        return {"weight": self.weight, "environment_losses": [float(x) for x in self.last_losses]}


def _labels(context: ObjectiveContext, method: str) -> np.ndarray:
    if context.env_labels is None:
        raise PainvrlInputError(f"method {method!r} needs the environment of every training positive")
    return context.env_labels


def dro(context: ObjectiveContext) -> Objective:
    return GroupDROObjective(_labels(context, "dro"), context.n_envs, context.device,
                             context.config.dro.step_size)


def vrex(context: ObjectiveContext) -> Objective:
    cfg = context.config.vrex
    return VREXObjective(_labels(context, "vrex"), context.n_envs, context.device, cfg.weight, cfg.warmup_epochs)
