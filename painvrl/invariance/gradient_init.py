"""Where HEI's expectation-maximisation starts: a partition read off the per-positive feature gradients.

From a random start hard EM separates environments whose spurious effects differ in SIGN, and stays at its start
when they differ only in STRENGTH (the common shape of real shifts): the E models fit the same average, and
every positive fits them alike. But the pooled model under-fits the spurious dims in the strong environment and
over-fits them in the weak one, so the gradient of a positive's loss with respect to a feature gate,

    g_j = dloss_j / dm = (sigma(s_j) - 1) * (W^T t_u) * x_i        (s_j the feature path's logit of positive j)

points one way in the strong environment and the other way in the weak one along the spurious dims, and alike
along the invariant ones. Normalised (so a few confident or extreme positives do not dominate) and centred, the
gradients' principal components carry that split. Each of the top ``components`` components, cut at zero, is a
candidate partition (for E > 2: E groups by k-means in the top E - 1 components' coordinates, plus each
component cut at its quantiles); the start is the candidate whose invariance violation against random partitions
of the same sizes (painvrl/invariance/diagnostics.py) is largest: the partition across which one model's losses
differ most.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from painvrl.invariance.diagnostics import partition_violation
from painvrl.model.linear_content import LinearContentRecommender

SUBSAMPLE = 50_000
"""Positives the principal components are computed from (all positives are then projected on them)."""
CHUNK = 65_536


@torch.no_grad()
def feature_gradients(scorer: LinearContentRecommender, pairs: np.ndarray) -> torch.Tensor:
    """[N, d]: the unit-normalised gradient of each positive's logistic loss with respect to a feature gate."""
    weight = getattr(scorer.encoder, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError("gradient initialisation needs a feature path with a linear projection W [k_f, d]")
    block = torch.as_tensor(np.asarray(pairs), dtype=torch.long, device=scorer.features.device).reshape(-1, 2)
    users, items = block[:, 0], block[:, 1]
    tastes = scorer.user_embedding[users, scorer.k_id:]
    logits = scorer.score_pairs(users, items)
    grad = (torch.sigmoid(logits) - 1.0).unsqueeze(1) * (tastes @ weight) * scorer.features[items]
    return grad / grad.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _kmeans(points: torch.Tensor, k: int, iterations: int = 25) -> torch.Tensor:
    """Lloyd's k-means started from the points at the k quantiles of the first coordinate (deterministic)."""
    order = torch.argsort(points[:, 0])
    centres = points[order[torch.linspace(0, len(points) - 1, k).round().long()]].clone()
    labels = torch.zeros(len(points), dtype=torch.long, device=points.device)
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(dim=1)
        for c in range(k):
            members = points[labels == c]
            if len(members):
                centres[c] = members.mean(0)
    return labels


def candidate_partitions(gradients: torch.Tensor, n_envs: int, components: int, seed: int) -> list[np.ndarray]:
    """The candidate partitions of the rows of ``gradients`` [N, d] from their top principal components."""
    return _candidates(lambda rows: gradients[rows], gradients.shape[0], n_envs, components, seed)


def _candidates(gradients_of: Callable[[torch.Tensor], torch.Tensor], n: int, n_envs: int, components: int,
                seed: int) -> list[np.ndarray]:
    """The candidates from ``gradients_of(rows)`` (the gradients of those positives), computed on a subsample
    for the components and chunk by chunk for the projections, so [N, d] is never held at once."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sample = torch.randperm(n, generator=generator)[:SUBSAMPLE]
    sampled = gradients_of(sample)
    mean = sampled.mean(0)
    q = min(components, sampled.shape[1], len(sample))
    torch.manual_seed(seed)  # pca_lowrank's random range finder
    _, _, basis = torch.pca_lowrank(sampled - mean, q=q, center=False)
    coords = torch.cat([(gradients_of(torch.arange(s, min(s + CHUNK, n))) - mean) @ basis
                        for s in range(0, n, CHUNK)])
    candidates: list[np.ndarray] = []
    for k in range(q):
        projection = coords[:, k].contiguous()
        if n_envs == 2:
            labels = (projection > 0).long()
        else:
            quantiles = torch.linspace(0, 1, n_envs + 1)[1:-1].to(coords)
            cuts = torch.quantile(projection[sample.to(coords.device)].float(), quantiles)
            labels = torch.bucketize(projection, cuts)
        candidates.append(labels.cpu().numpy().astype(np.int64))
    if n_envs > 2:
        candidates.append(_kmeans(coords[:, : n_envs - 1], n_envs).cpu().numpy().astype(np.int64))
    return candidates


def gradient_start(scorer: LinearContentRecommender, train: np.ndarray, n_envs: int, components: int,
                   reference_losses: np.ndarray, seed: int) -> tuple[np.ndarray, list[float]]:
    """(the start partition, every candidate's violation z): the candidate with the largest invariance
    violation (candidates with an empty environment excluded)."""
    pairs = np.asarray(train)
    candidates = _candidates(lambda rows: feature_gradients(scorer, pairs[rows.numpy()]), len(pairs), n_envs,
                             components, seed)
    scores = []
    for labels in candidates:
        full = np.bincount(labels, minlength=n_envs).min() > 0
        z = partition_violation(reference_losses, labels, n_envs, seed)["z"] if full else None
        scores.append(float(z) if z is not None else -float("inf"))
    return candidates[int(np.argmax(scores))], scores
