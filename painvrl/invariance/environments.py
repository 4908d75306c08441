"""Heterogeneous environment identification (HEI, docs/algorithm.md).

Hard-EM clustering of the training positives into E environments. The E environment models share the frozen
feature path of the pretrained backbone (painvrl/invariance/feature_path.py) and differ only in the feature
projection W_k; the projections are STACKED in one parameter ``weight [E, k_f, d]`` and trained jointly, one
pass over the positives per epoch, each positive contributing only to the model of its current environment.
Relabelling scores every positive under all E models and takes the argmax score (or argmin own loss). EM stops
when at most ``change_tol`` of the labels change; fits that tie for most positives stop it with an error, and
environments below the minimum size are re-seeded from the largest by the models' disagreement.

Distributed design (painvrl/distributed/collective.py): every rank draws the same global batch and negatives from
a generator seeded by (seed, round, iteration, epoch), keeps ``shard_slice`` of it, divides its loss by the
GLOBAL batch size and calls ``collective.sync_gradients`` before the optimiser step; replicated terms (the L2
and InvRL L1 penalties) are divided by the world size so the synced gradient counts them once. Relabelling
assigns fixed-size chunks of the positives round-robin to ranks and gathers the labels with
``all_gather_objects``; each chunk's negatives come from its own seeded generator, so labels do not depend on
the number of ranks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from painvrl.config import EnvironmentsConfig
from painvrl.distributed.collective import Collective, LocalCollective, replicated, shard_slice, synced_step
from painvrl.distributed.sampling import EpochBatches, make_generator, pool_active
from painvrl.errors import PainvrlInputError
from painvrl.invariance.environment_models import EnvironmentScorers
from painvrl.invariance.linear_models import StackedEnvironmentModels
from painvrl.model.linear_content import LinearContentRecommender

logger = logging.getLogger(__name__)

RELABEL_CHUNK = 8192
"""Positives per relabelling chunk (fixed, so chunk seeds do not depend on the number of ranks)."""

def seeded_generator(seed: int, phase: str, *keys: int) -> torch.Generator:
    """CPU generator seeded from (seed, phase, keys): identical on every rank, independent across phases."""
    return make_generator(seed, phase, *keys)


@dataclass
class HEIResult:
    """Output of :func:`identify_environments`."""

    labels: np.ndarray
    """int64 [n_train] environment of each training positive."""
    sizes: list[int]
    churn: list[float] = field(default_factory=list)
    """Fraction of labels changed at each EM iteration."""
    reseeded: list[dict[str, int]] = field(default_factory=list)
    """Environments below the minimum size re-seeded from the largest: {iteration, empty, split_from, moved,
    size}."""
    iterations: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    criterion: list[float] = field(default_factory=list)
    """With a ``criterion``: its value at every iterate of EM (the start first)."""
    kept_iteration: int | None = None
    """With a ``criterion``: the iterate returned (0 = the start), the one with the largest criterion."""
    models: EnvironmentScorers | None = None
    label_pairs: Callable[[np.ndarray], np.ndarray] | None = None


def _fits_of(
    models: EnvironmentScorers,
    pairs: np.ndarray,
    relabel: str,
    n_negatives: int,
    seed: int,
    keys: tuple[int, ...],
    collective: Collective,
) -> np.ndarray:
    """float64 [n, E] fit of every pair under every model (score, or minus its own loss); chunks round-robin
    over ranks, gathered on every rank."""
    device = models.weight.device
    n = len(pairs)
    n_chunks = max(1, math.ceil(n / RELABEL_CHUNK))
    local: list[tuple[int, np.ndarray]] = []
    for chunk in range(collective.rank, n_chunks, collective.world_size):
        rows = pairs[chunk * RELABEL_CHUNK:(chunk + 1) * RELABEL_CHUNK]
        users = torch.as_tensor(rows[:, 0], device=device)
        items = torch.as_tensor(rows[:, 1], device=device)
        if relabel == "loss":
            gen = seeded_generator(seed, "hei_relabel", *keys, chunk)
            negs = torch.randint(models.n_items, (len(rows), n_negatives), generator=gen)
            fit = -models.loss_all(users, items, negs.to(device))
        else:
            fit = models.score_all(users, items)
        local.append((chunk, fit.cpu().numpy().astype(np.float64)))
    gathered = collective.all_gather_objects(local) if collective.world_size > 1 else [local]
    fits = np.empty((n, models.n_envs), dtype=np.float64)
    for part in gathered:
        for chunk, values in part:
            fits[chunk * RELABEL_CHUNK: chunk * RELABEL_CHUNK + len(values)] = values
    return fits


def labels_from_fits(fits: np.ndarray) -> np.ndarray:
    """Each pair's best-fitting environment (the first on exact ties)."""
    return np.argmax(fits, axis=1).astype(np.int64) if fits.size else np.zeros(len(fits), dtype=np.int64)


def tied_fraction(fits: np.ndarray, rel_tol: float = 1e-6) -> float:
    """Fraction of pairs whose best two fits differ by at most ``rel_tol`` of the best fit's magnitude (plus
    1e-12): the environment models cannot tell those pairs' environments apart."""
    if fits.shape[0] == 0 or fits.shape[1] < 2:
        return 0.0
    top = np.sort(fits, axis=1)[:, -2:]
    margin = top[:, 1] - top[:, 0]
    return float(np.mean(margin <= rel_tol * np.abs(top[:, 1]) + 1e-12))


def check_not_tied(fits: np.ndarray, max_tied: float, backbone: str, n_envs: int) -> None:
    """The error that stops HEI when the environment models' fits tie for most positives."""
    tied = tied_fraction(fits)
    if tied > max_tied:
        raise PainvrlInputError(
            f"environment identification over model {backbone!r}: the {n_envs} environment models fit "
            f"{tied:.0%} of the training positives identically (environments.max_tied = {max_tied}), so their "
            "labels would be arbitrary. The models' scores do not depend on the features they are given: check "
            "the features (environments.input=variant sees only the variant part (1 - m) * f, nothing once every "
            "gate is open)")


def reseed_small(fits: np.ndarray, labels: np.ndarray, min_count: int, iteration: int) -> list[dict[str, int]]:
    """Re-seed every environment smaller than ``min_count`` (at least 1) from the largest one: the largest
    environment's positives whose fit under the small environment's model is best relative to their fit under
    their own model (where the environment models disagree least about them) move, until the small one has
    ``min_count``. In place; returns one event per re-seeded environment."""
    n_envs = fits.shape[1]
    events = []
    target = max(1, min_count)
    for env in range(n_envs):
        sizes = np.bincount(labels, minlength=n_envs)
        if sizes[env] >= target:
            continue
        largest = int(np.argmax(sizes))
        members = np.flatnonzero(labels == largest)
        room = len(members) - target
        wanted = min(target - int(sizes[env]), room)
        if wanted <= 0:
            continue
        disagreement = fits[members, env] - fits[members, largest]
        moved = members[np.argsort(-disagreement, kind="stable")[:wanted]]
        labels[moved] = env
        logger.info("HEI: environment %d had %d positives (minimum %d); re-seeded with %d from environment %d",
                    env, int(sizes[env]), target, len(moved), largest)
        events.append({"iteration": iteration, "empty": env, "split_from": largest, "moved": len(moved),
                       "size": int(sizes[env])})
    return events


def train_environment_models(
    models: EnvironmentScorers,
    train: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    n_negatives: int,
    seed: int,
    keys: tuple[int, ...],
    collective: Collective,
    progress: bool = False,
    negative_pool: int = 0,
) -> list[float]:
    """Train the E models jointly for ``epochs`` passes over the positives; model k sees only label-k rows.

    ``negative_pool = P > 0``: each step draws one pool of ``max(1, P // E)`` uniform items per environment
    (so a step encodes about B + P items in all, as the backbone's pooled step does) and every positive draws
    its negatives from its environment's pool; ``0``: independent uniform negatives.

    Returns the mean training loss of each epoch (global, identical on every rank).
    """
    device = models.weight.device
    params = models.trainable()
    optimizer = torch.optim.Adam(params, lr=lr)
    n = len(train)
    train_t = torch.as_tensor(train)
    labels_t = torch.as_tensor(labels)
    ws, rank = collective.world_size, collective.rank
    n_items = models.n_items
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * math.ceil(n / batch_size), desc="HEI train", leave=False)
    phase = "hei_train:" + ":".join(str(k) for k in keys)
    pool_size = max(1, negative_pool // models.n_envs)
    pooled = pool_active(pool_size, n_items) and negative_pool > 0
    for epoch in range(epochs):
        total = torch.zeros((), device=device)
        for batch in EpochBatches(n, batch_size, seed, epoch, rank, ws, phase=phase, n_items=n_items,
                                  n_negatives=0 if pooled else n_negatives):
            rows = train_t[batch.rows].to(device)
            envs = labels_t[batch.rows].to(device)
            if pooled:
                gen = make_generator(seed, phase + ":pool", epoch, batch.step)
                pools = torch.randint(n_items, (models.n_envs, pool_size), generator=gen)
                positions = torch.randint(pool_size, (batch.global_size, n_negatives), generator=gen)
                positions = positions[shard_slice(batch.global_size, rank, ws)]
                per = models.example_losses_pooled(rows[:, 0], rows[:, 1], pools.to(device), positions.to(device),
                                                   envs)
            else:
                assert batch.negatives is not None
                per = models.example_losses(rows[:, 0], rows[:, 1], batch.negatives.to(device), envs)
            data_loss = per.sum() / batch.global_size
            loss = data_loss + replicated(models.penalty(), ws)
            synced_step(optimizer, loss, params, collective)
            total = total + data_loss.detach() * batch.global_size
            if bar is not None:
                bar.update(1)
        history.append(float(collective.all_reduce_sum(total)) / n)
    if bar is not None:
        bar.close()
    return history


def identify_environments(
    models: EnvironmentScorers,
    train: np.ndarray,
    cfg: EnvironmentsConfig,
    *,
    batch_size: int,
    n_negatives: int,
    seed: int,
    round_index: int = 0,
    init_labels: np.ndarray | None = None,
    collective: Collective | None = None,
    progress: bool = False,
    negative_pool: int = 0,
    backbone: str = "ultragcn",
    criterion: Callable[[np.ndarray], float] | None = None,
) -> HEIResult:
    """Hard-EM: train the E models jointly, relabel every positive, repeat until <= change_tol labels change.

    ``init_labels`` warm-starts EM (later rounds); otherwise labels are drawn uniformly from a seeded generator.
    The returned ``label_pairs`` labels new (user, item) pairs (val/test positives) with the fitted models, by
    the same rule. After every relabelling: an error when the models' fits tie for more than
    ``cfg.max_tied`` of the positives (``backbone`` names the model in it), and environments below
    ``cfg.min_size`` re-seeded by :func:`reseed_small`.

    ``criterion`` (a score of a partition, larger is better): EM returns the iterate, the start included, with
    the largest score instead of the last one, and ``label_pairs`` uses the models trained on that iterate. EM is
    then a search that proposes partitions and the criterion chooses among them, so the drift of hard EM away
    from a start chosen by the same criterion cannot lose it.
    """
    collective = collective or LocalCollective()
    n_envs = models.n_envs
    if init_labels is not None:
        if init_labels.shape != (len(train),):
            raise ValueError(f"init_labels has shape {init_labels.shape}, expected ({len(train)},)")
        labels = init_labels.astype(np.int64).copy()
    else:
        gen = seeded_generator(seed, "hei_init", round_index)
        labels = torch.randint(n_envs, (len(train),), generator=gen).numpy().astype(np.int64)
    result = HEIResult(labels=labels, sizes=[])
    min_count = max(1, math.ceil(cfg.min_size * len(train)))
    kept = _KeptIterate(criterion, models, labels)
    for iteration in range(cfg.max_iters):
        keys = (round_index, iteration)
        result.epoch_losses.extend(train_environment_models(
            models, train, labels, cfg.env_epochs, cfg.lr, batch_size, n_negatives, seed, keys, collective,
            progress, negative_pool))
        kept.trained(iteration)
        fits = _fits_of(models, train, cfg.relabel, n_negatives, seed, keys, collective)
        check_not_tied(fits, cfg.max_tied, backbone, n_envs)
        new_labels = labels_from_fits(fits)
        result.reseeded.extend(reseed_small(fits, new_labels, min_count, iteration + 1))
        churn = float(np.mean(new_labels != labels))
        labels = new_labels
        kept.propose(iteration + 1, labels)
        result.churn.append(churn)
        result.iterations = iteration + 1
        logger.info("HEI round %d iteration %d: churn %.4f sizes %s", round_index, iteration, churn,
                    np.bincount(labels, minlength=n_envs).tolist())
        if churn <= cfg.change_tol:
            break
    if criterion is not None:
        labels = kept.restore()
        result.criterion, result.kept_iteration = kept.values, kept.index
    result.labels = labels
    result.sizes = np.bincount(labels, minlength=n_envs).tolist()
    result.models = models
    result.label_pairs = make_label_pairs(models, cfg.relabel, n_negatives, seed)
    return result


class _KeptIterate:
    """The iterate of EM with the largest criterion, and the environment models trained on it.

    Iterate k (0 = the start) is the partition after k relabellings; the models trained on it are those after
    the training pass of iteration k, and the last iterate's are the final models (they produced it). Only the
    best iterate's labels and parameters are held."""

    def __init__(self, criterion: Callable[[np.ndarray], float] | None, models: EnvironmentScorers,
                 start: np.ndarray) -> None:
        self.criterion, self.models = criterion, models
        self.values: list[float] = []
        self.index = 0
        self.labels = start.copy()
        self.params: list[torch.Tensor] | None = None
        if criterion is not None:
            self.values.append(float(criterion(start)))

    def trained(self, iteration: int) -> None:
        """The models have just been trained on iterate ``iteration``: snapshot them if it is the best."""
        if self.criterion is not None and self.index == iteration:
            self.params = [p.detach().clone() for p in self.models.trainable()]

    def propose(self, iteration: int, labels: np.ndarray) -> None:
        if self.criterion is None:
            return
        value = float(self.criterion(labels))
        self.values.append(value)
        if value > self.values[self.index]:
            self.index, self.labels, self.params = iteration, labels.copy(), None

    def restore(self) -> np.ndarray:
        """The best iterate's labels, with its models loaded (the last iterate's are the current ones)."""
        last = len(self.values) - 1
        if self.index != last and self.params is not None:
            with torch.no_grad():
                for param, saved in zip(self.models.trainable(), self.params, strict=True):
                    param.copy_(saved)
        return self.labels


def make_label_pairs(
    models: EnvironmentScorers, relabel: str, n_negatives: int, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Labeller of new (user, item) pairs with the fitted models (same criterion as relabelling)."""

    def label_pairs(pairs: np.ndarray) -> np.ndarray:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.int64)
        return labels_from_fits(_fits_of(models, pairs, relabel, n_negatives, seed, (0,), LocalCollective()))

    return label_pairs


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two labelings, in numpy (1.0 = identical partitions)."""
    a = np.asarray(labels_true).ravel()
    b = np.asarray(labels_pred).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape} vs {b.shape}")
    n = a.size
    if n < 2:
        return 1.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.float64)
    np.add.at(table, (ai, bi), 1.0)

    def comb2(x: np.ndarray) -> Any:
        return (x * (x - 1.0) / 2.0).sum()

    index = comb2(table)
    sum_a, sum_b = comb2(table.sum(axis=1)), comb2(table.sum(axis=0))
    total = n * (n - 1.0) / 2.0
    expected = sum_a * sum_b / total
    maximum = 0.5 * (sum_a + sum_b)
    if maximum == expected:  # both partitions trivial (one cluster each, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))


def environment_models(n_envs: int, scorer: LinearContentRecommender, mask: torch.Tensor, k_f: int,
                       input_mode: str = "variant", l1_rho: float = 0.0, init_std: float = 0.01,
                       generator: torch.Generator | None = None, train_users: bool = False,
                       feature_bias: bool = False) -> EnvironmentScorers:
    """The E environment models over a feature path ``scorer`` (painvrl/invariance/feature_path.py)."""
    return StackedEnvironmentModels(n_envs, scorer, mask, k_f, input_mode, l1_rho, init_std, generator,
                                    train_users=train_users, feature_bias=feature_bias)
