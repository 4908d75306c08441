"""Where HEI's expectation-maximisation starts: a partition read off the per-positive feature gradients.

From a random start hard EM separates environments whose spurious effects differ in SIGN, and stays at its start
when they differ only in STRENGTH (the common shape of real shifts): the E models fit the same average, and
every positive fits them alike. But the pooled model under-fits the spurious dims in the strong environment and
over-fits them in the weak one, so the gradient of a positive's loss with respect to a feature gate,

    g_j = dloss_j / dm = (sigma(s_j) - 1) * (W^T t_u) * x_i        (s_j the feature path's logit of positive j)

points one way in the strong environment and the other way in the weak one along the spurious dims, and alike
along the invariant ones. Normalised (so a few confident or extreme positives do not dominate) and centred, the
gradients' principal components carry that split. For two environments each of the top ``components``
components is cut at the 10%, 15%, ..., 90% quantiles (a strength shift's environments are rarely of equal size:
a cut at zero halves the positives whatever their shares); for E > 2 each is cut into E equal-quantile buckets,
plus E groups by k-means in the top E - 1 components' coordinates. The start is the candidate across whose
environments the reference model's losses differ most, by the F statistic of those losses
(painvrl/invariance/diagnostics.py), which ranks partitions of different sizes on one scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from painvrl.invariance.diagnostics import loss_f_statistic
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


CUT_SHARES = tuple(round(0.1 + 0.05 * k, 2) for k in range(17))
"""For two environments, each component is cut so that these shares of the positives (0.10, 0.15, ..., 0.90) lie
above the cut: a strength shift's environments are rarely of equal size, and a cut at zero splits the positives
about in half whatever their shares."""


@dataclass(frozen=True)
class Candidate:
    """One candidate start: the labels, the principal component it was cut from (None: k-means over the top
    components) and the share of the positives above the cut (None for k-means and quantile buckets)."""

    labels: np.ndarray
    component: int | None
    share: float | None


def candidate_partitions(gradients: torch.Tensor, n_envs: int, components: int, seed: int) -> list[Candidate]:
    """The candidate partitions of the rows of ``gradients`` [N, d] from their top principal components."""
    return list(_candidates(lambda rows: gradients[rows], gradients.shape[0], n_envs, components, seed))


def _candidates(gradients_of: Callable[[torch.Tensor], torch.Tensor], n: int, n_envs: int, components: int,
                seed: int) -> Iterator[Candidate]:
    """The candidates from ``gradients_of(rows)`` (the gradients of those positives), computed on a subsample
    for the components and chunk by chunk for the projections, so [N, d] is never held at once. One candidate
    at a time: their labels together would be ~100 x N integers."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sample = torch.randperm(n, generator=generator)[:SUBSAMPLE]
    sampled = gradients_of(sample)
    mean = sampled.mean(0)
    q = min(components, sampled.shape[1], len(sample))
    torch.manual_seed(seed)  # pca_lowrank's random range finder
    _, _, basis = torch.pca_lowrank(sampled - mean, q=q, center=False)
    coords = torch.cat([(gradients_of(torch.arange(s, min(s + CHUNK, n))) - mean) @ basis
                        for s in range(0, n, CHUNK)])
    for k in range(q):
        projection = coords[:, k].contiguous()
        sampled_projection = projection[sample.to(coords.device)].float()
        if n_envs == 2:
            cuts = torch.quantile(sampled_projection, 1.0 - torch.tensor(CUT_SHARES).to(sampled_projection))
            for share, cut in zip(CUT_SHARES, cuts.tolist(), strict=True):
                yield Candidate((projection > cut).long().cpu().numpy().astype(np.int64), k, share)
        else:
            quantiles = torch.linspace(0, 1, n_envs + 1)[1:-1].to(coords)
            cuts = torch.quantile(sampled_projection, quantiles)
            yield Candidate(torch.bucketize(projection, cuts).cpu().numpy().astype(np.int64), k, None)
    if n_envs > 2:
        yield Candidate(_kmeans(coords[:, : n_envs - 1], n_envs).cpu().numpy().astype(np.int64), None, None)


def gradient_start(scorer: LinearContentRecommender, train: np.ndarray, n_envs: int, components: int,
                   reference_losses: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(the start partition, a record of the choice): the candidate across whose environments the reference
    model's losses differ most, by their F statistic (candidates with an empty environment excluded). The
    record holds the chosen candidate's component, share and F, and the largest F among each component's cuts."""
    pairs = np.asarray(train)
    chosen: Candidate | None = None
    best = -float("inf")
    per_component: dict[str, float] = {}
    for candidate in _candidates(lambda rows: feature_gradients(scorer, pairs[rows.numpy()]), len(pairs), n_envs,
                                 components, seed):
        full = np.bincount(candidate.labels, minlength=n_envs).min() > 0
        f = loss_f_statistic(reference_losses, candidate.labels, n_envs) if full else -1.0
        key = "kmeans" if candidate.component is None else str(candidate.component + 1)
        per_component[key] = max(per_component.get(key, f), f)
        if f > best:
            chosen, best = candidate, f
    assert chosen is not None, "the top principal component always gives a candidate"
    record = {"component": "kmeans" if chosen.component is None else chosen.component + 1, "share": chosen.share,
              "f": best, "best_f_per_component": per_component}
    return chosen.labels, record


def gate_contrast(scorer: LinearContentRecommender, train: np.ndarray, labels: np.ndarray,
                  n_envs: int) -> tuple[np.ndarray, np.ndarray]:
    """(contrast, reliance), float64 [d] each, from one pass over the positives in chunks. Per feature gate d the
    contrast is the one-way F of the positives' normalised gate gradients across the environments of ``labels``,
    and the reference model's reliance on d is |mean| / std of those gradients over all positives (how
    consistently opening the gate would lower the positives' losses). Zeros where fewer than two environments
    are non-empty."""
    pairs = np.asarray(train)
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    d = int(scorer.features.shape[1])
    sums = torch.zeros(n_envs, d, dtype=torch.float64)
    sq_sums = torch.zeros(n_envs, d, dtype=torch.float64)
    counts = torch.zeros(n_envs, dtype=torch.float64)
    for start in range(0, len(pairs), CHUNK):
        grads = feature_gradients(scorer, pairs[start:start + CHUNK]).double().cpu()
        onehot = torch.nn.functional.one_hot(labels_t[start:start + CHUNK], n_envs).double()
        sums += onehot.T @ grads
        sq_sums += onehot.T @ grads.square()
        counts += onehot.sum(0)
    present = counts > 0
    sums, sq_sums, counts = sums[present], sq_sums[present], counts[present]
    total, k = counts.sum(), int(present.sum())
    if k < 2 or total <= k:
        return np.zeros(d), np.zeros(d)
    mean = sums.sum(0) / total
    variance = (sq_sums.sum(0) / total - mean.square()).clamp(min=1e-30)
    env_means = sums / counts[:, None]
    between = (counts[:, None] * (env_means - mean).square()).sum(0) / (k - 1)
    within = (sq_sums - counts[:, None] * env_means.square()).sum(0).clamp(min=1e-30) / (total - k)
    return (between / within).numpy(), (mean.abs() / variance.sqrt()).numpy()


def difficulty_alignment(scorer: LinearContentRecommender, train: np.ndarray, labels: np.ndarray,
                         n_envs: int) -> float:
    """How much a partition is a split of hard from easy positives, in [-1, 1]: the Spearman correlation over
    the feature gates of its contrast with the reference model's reliance (:func:`gate_contrast`). Where the
    environments differ in how well the reference model fits them and not in a spurious effect, they differ
    most on the features it relies on most, and IRM across them closes those features; a strength shift's
    environments differ on the spurious features, which a pooled model relies on no more than on the others."""
    return alignment_of(*gate_contrast(scorer, train, labels, n_envs))


def alignment_of(contrast: np.ndarray, reliance: np.ndarray) -> float:
    """The difficulty alignment from :func:`gate_contrast`'s (contrast, reliance): their Spearman correlation, 0
    where it is undefined (no contrast, or constant values)."""
    rho = spearmanr(contrast, reliance)[0] if contrast.any() else 0.0
    return float(rho) if np.isfinite(rho) else 0.0
