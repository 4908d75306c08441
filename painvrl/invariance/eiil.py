"""EIIL, environment inference for invariant learning (Creager, Jacobsen and Zemel, ICML 2021).

Given a reference model trained by ERM (the pretrained backbone), EIIL infers the two-environment partition of
the training examples that most violates the IRM condition for that model: with a soft assignment q_i in [0, 1]
of example i to environment 0 (and 1 - q_i to environment 1), it maximises the IRMv1 penalty

    sum_e || d/dw R_e(w) at w = 1 ||^2,   R_e(w) = sum_i q_ie l_i(w) / sum_i q_ie,

where l_i(w) is example i's own loss with its scores multiplied by the dummy scale w. The gradient of R_e is
linear in the per-example scale gradients g_i = d l_i / dw at w = 1, so the reference model is evaluated once
(l_i and g_i of every training positive, against seeded negatives) and the partition is optimised on those
numbers alone: sum_e (sum_i q_ie g_i / sum_i q_ie)^2 by Adam on the logits of q, then q_i > 0.5 -> environment 0.

Unlike HEI, the partition does not depend on the mask, so it is inferred once and used by every round. New
pairs (validation and test positives) get the environment of the nearer centroid of the training partition in
the standardised (l, g) plane of the same reference model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from painvrl.distributed.sampling import make_generator
from painvrl.errors import PainvrlInputError
from painvrl.model.recommender import Recommender

CHUNK = 8192
"""Positives per evaluation chunk of the reference model."""


@dataclass(frozen=True)
class EIILSettings:
    steps: int = 2000
    """Adam steps on the assignment logits."""
    lr: float = 0.01
    """Adam learning rate of the assignment logits."""


def scale_gradients(model: Recommender, pairs: np.ndarray, n_negatives: int, seed: int,
                    phase: str) -> tuple[np.ndarray, np.ndarray]:
    """(l_i, g_i = d l_i / dw at w = 1) of every (user, item) pair under ``model``, float64 [N] each."""
    device = model.features.device
    losses, grads = [], []
    for index, start in enumerate(range(0, len(pairs), CHUNK)):
        rows = np.asarray(pairs[start:start + CHUNK], dtype=np.int64)
        users = torch.as_tensor(rows[:, 0], device=device)
        items = torch.as_tensor(rows[:, 1], device=device)
        negatives = torch.randint(model.n_items, (len(rows), n_negatives),
                                  generator=make_generator(seed, phase, index)).to(device)
        scale = torch.ones(len(rows), device=device, dtype=model.features.dtype, requires_grad=True)
        with torch.enable_grad():
            per_example = model.per_interaction_loss(users, items, negatives, score_scale=scale)
            (grad,) = torch.autograd.grad(per_example.sum(), scale)
        losses.append(per_example.detach().cpu().double().numpy())
        grads.append(grad.detach().cpu().double().numpy())
    empty = np.zeros(0, dtype=np.float64)
    return (np.concatenate(losses) if losses else empty), (np.concatenate(grads) if grads else empty)


def irm_violation(q: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum over the two environments of (weighted mean scale gradient)^2 under the soft assignment q."""
    total = q.new_zeros(())
    for weights in (q, 1.0 - q):
        total = total + ((weights * grads).sum() / weights.sum().clamp_min(1e-8)).pow(2)
    return total


def infer_partition(grads: np.ndarray, settings: EIILSettings, seed: int) -> np.ndarray:
    """Hard labels [N] (0/1) of the partition maximising :func:`irm_violation` of the per-example gradients."""
    g = torch.as_tensor(grads, dtype=torch.float64)
    g = g / g.std().clamp_min(1e-12)  # the optimum does not depend on the scale; Adam's steps do
    generator = make_generator(seed, "eiil_init")
    logits = (torch.randn(len(g), generator=generator, dtype=torch.float64) * 0.01).requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=settings.lr)
    for _ in range(settings.steps):
        optimiser.zero_grad()
        (-irm_violation(torch.sigmoid(logits), g)).backward()
        optimiser.step()
    return (torch.sigmoid(logits).detach() <= 0.5).numpy().astype(np.int64)


def eiil_environments(reference: Recommender, train: np.ndarray, n_envs: int, n_negatives: int, seed: int,
                      settings: EIILSettings | None = None) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(labels [n_train], labeller of new pairs) from EIIL on the reference model (see the module docstring)."""
    if n_envs != 2:
        raise PainvrlInputError(f"config field 'environments.n_envs' is {n_envs}, but environments.source=eiil "
                                "infers exactly 2 environments")
    settings = settings or EIILSettings()
    losses, grads = scale_gradients(reference, train, n_negatives, seed, "eiil_train")
    labels = infer_partition(grads, settings, seed)
    points = np.stack([losses, grads], axis=1)
    centre, spread = points.mean(axis=0), points.std(axis=0) + 1e-12
    standard = (points - centre) / spread
    centroids = np.stack([standard[labels == e].mean(axis=0) if (labels == e).any() else np.full(2, np.inf)
                          for e in range(2)])

    def label_pairs(pairs: np.ndarray) -> np.ndarray:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.int64)
        new_losses, new_grads = scale_gradients(reference, pairs, n_negatives, seed, "eiil_pairs")
        new = (np.stack([new_losses, new_grads], axis=1) - centre) / spread
        distances = ((new[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
        return distances.argmin(axis=1).astype(np.int64)

    return labels, label_pairs
