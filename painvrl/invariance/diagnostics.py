"""How much heterogeneity a partition of the training positives shows: an unsupervised diagnostic per E.

The invariance violation of a partition is V-REx's: the variance over its environments of the mean loss of
their positives under one fixed reference model (the backbone's feature path, ERM-fitted on all positives).
A partition that separates where the reference model fits well from where it does not has a large violation;
so does a random one, by chance, on small environments. The diagnostic compares the two: the partition's
violation against those of random partitions with the same environment sizes (the labels permuted), as a z-score
and a ratio. z near 0 means the partition shows no more heterogeneity than chance, so more environments, or
the invariance penalties over them, have nothing to work with on this data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from painvrl.distributed.sampling import make_generator
from painvrl.model.recommender import Recommender

RANDOM_PARTITIONS = 20
"""Random partitions the violation is compared with."""


def violation(losses: np.ndarray, labels: np.ndarray, n_envs: int) -> float:
    """Variance over the non-empty environments of the mean loss of their positives."""
    sums = np.bincount(labels, weights=losses, minlength=n_envs)
    counts = np.bincount(labels, minlength=n_envs)
    present = counts > 0
    if present.sum() < 2:
        return 0.0
    return float(np.var(sums[present] / counts[present]))


def partition_violation(losses: np.ndarray, labels: np.ndarray, n_envs: int, seed: int = 0,
                        n_random: int = RANDOM_PARTITIONS) -> dict[str, Any]:
    """The partition's violation against ``n_random`` random partitions of the same sizes:
    {violation, random_mean, random_std, z, ratio} (z and ratio None where the random ones do not vary)."""
    losses = np.asarray(losses, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    value = violation(losses, labels, n_envs)
    rng = np.random.default_rng(seed)
    random = np.array([violation(losses, rng.permutation(labels), n_envs) for _ in range(n_random)])
    mean, std = float(random.mean()), float(random.std(ddof=1)) if n_random > 1 else 0.0
    z = (value - mean) / std if std > 0 else None
    return {"violation": value, "random_mean": mean, "random_std": std, "z": z,
            "ratio": value / mean if mean > 0 else None}


def loss_f_statistic(losses: np.ndarray, labels: np.ndarray, n_envs: int) -> float:
    """One-way ANOVA F of the losses across the environments of ``labels``: the spread of the environments'
    mean losses (weighted by size) over the spread within them. Unlike the violation's z against a few random
    partitions it is exact and noise-free, and it compares partitions of different sizes on one scale (its
    expectation under a random partition is about 1 whatever the sizes), so it can rank cuts at different
    shares. 0 where fewer than two environments are non-empty or the losses do not vary within them."""
    losses = np.asarray(losses, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_envs)
    present = int((counts > 0).sum())
    if present < 2 or len(losses) <= present:
        return 0.0
    means = np.bincount(labels, weights=losses, minlength=n_envs) / np.maximum(counts, 1)
    between = float((counts * (means - losses.mean()) ** 2).sum()) / (present - 1)
    within = float(((losses - means[labels]) ** 2).sum()) / (len(losses) - present)
    return between / within if within > 0 else 0.0


@torch.no_grad()
def positive_losses(scorer: Recommender, train: np.ndarray, n_negatives: int, seed: int,
                    chunk: int = 8192) -> np.ndarray:
    """float64 [n] loss of every training positive under ``scorer`` against seeded uniform negatives."""
    was_training = scorer.training
    scorer.eval()
    generator = make_generator(seed, "violation_negatives")
    device = scorer.features.device
    out = []
    try:
        for start in range(0, len(train), chunk):
            rows = torch.as_tensor(np.asarray(train[start:start + chunk]), device=device)
            negatives = torch.randint(scorer.n_items, (len(rows), n_negatives), generator=generator).to(device)
            out.append(scorer.per_interaction_loss(rows[:, 0], rows[:, 1], negatives).double().cpu().numpy())
    finally:
        scorer.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)
