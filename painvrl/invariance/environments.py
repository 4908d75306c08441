"""Heterogeneous environment identification (HEI, docs/algorithm.md).

Hard-EM clustering of the training positives into E environments. The E environment models share the frozen
pretrained user table P and item-ID table Q and differ only in their feature projection W_k; the projections
are STACKED in one parameter ``weight [E, k_f, d]`` and trained jointly, one pass over the positives per epoch,
each positive contributing only to the model of its current environment. Relabelling scores every positive
under all E models with one matmul (``x @ W_flat^T``) and takes the argmax score (or argmin own loss).

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
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from painvrl.config import EnvironmentsConfig
from painvrl.distributed.collective import Collective, LocalCollective, shard_slice
from painvrl.distributed.sampling import EpochBatches, make_generator, pool_active
from painvrl.model.backbone import Backbone

logger = logging.getLogger(__name__)

RELABEL_CHUNK = 8192
"""Positives per relabelling chunk (fixed, so chunk seeds do not depend on the number of ranks)."""

def seeded_generator(seed: int, phase: str, *keys: int) -> torch.Generator:
    """CPU generator seeded from (seed, phase, keys): identical on every rank, independent across phases."""
    return make_generator(seed, phase, *keys)


def _replicated(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """Same value, gradient divided by world_size: a term every rank computes identically is counted once
    after gradients are summed over ranks."""
    if world_size == 1:
        return value
    return value / world_size + (value - value / world_size).detach()


class EnvironmentModels(nn.Module):
    """E environment scorers with stacked projections ``weight [E, k_f, d]`` on frozen P and Q.

    score_k(u, i) = <P_u, [Q_i ; W_k x_i]> with x_i = (1 - m) * f_i (``input="variant"``) or f_i
    (``input="invrl"``, with the penalty rho * mean|W_k * m| added by :meth:`penalty`).
    """

    user_embedding: torch.Tensor
    item_embedding: torch.Tensor
    features: torch.Tensor
    mask: torch.Tensor

    def __init__(
        self,
        n_envs: int,
        pretrained: Backbone,
        mask: torch.Tensor,
        k_f: int,
        input_mode: str = "variant",
        l1_rho: float = 0.0,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        train_users: bool = False,
        feature_bias: bool = False,
    ) -> None:
        super().__init__()
        features = cast(torch.Tensor, pretrained.features)
        device = features.device
        d = int(features.shape[1])
        if input_mode not in ("variant", "invrl"):
            raise ValueError(f"unknown environment input mode {input_mode!r}")
        # feature_bias: each model also gets a global item term b_k . x_i + c_k ("in environment k, items with
        # this feature pattern are clicked more by everyone", with an intercept so that relabelling by score
        # has a threshold). Implemented as one extra output row of W_k read by a constant-1 user column and a
        # constant-1 input column (which also gives each user a per-environment offset), so every scoring path
        # below stays a plain <user, item> product.
        extra = 1 if feature_bias else 0
        self.n_envs, self.k_f, self.feature_dim, self.input_mode = n_envs, k_f + extra, d + extra, input_mode
        self.l1_rho = float(l1_rho)
        self.l2 = pretrained.l2
        self.n_items = int(pretrained.n_items)
        weight = torch.randn(n_envs, self.k_f, self.feature_dim, generator=generator) * init_std
        self.weight = nn.Parameter(weight.to(device))
        users = pretrained.user_embedding.detach().clone()
        if feature_bias:
            users = torch.cat([users, users.new_ones(users.shape[0], 1)], dim=1)
            features = torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)
            mask = torch.cat([mask.detach().to(features), mask.new_zeros(1).to(features)])
        if train_users:
            # One user table shared by the E models, trained jointly with them (starts at the pretrained P).
            # Frozen P holds only what ERM learned from the MIXTURE of environments: where the environments'
            # spurious strengths average out, P carries no spurious taste and no W_k can express it.
            self.user_embedding = nn.Parameter(users)
        else:
            self.register_buffer("user_embedding", users, persistent=False)
        self.register_buffer("item_embedding", pretrained.item_embedding.detach().clone(), persistent=False)
        self.register_buffer("features", features, persistent=False)
        self.register_buffer("mask", mask.detach().to(device=device, dtype=torch.float32).clone(),
                             persistent=False)
        # The backbone's loss (same weights and degree buffers); a bound method, not a submodule.
        self._per_example_loss: Callable[..., torch.Tensor] = pretrained.per_example_loss

    def trainable(self) -> list[nn.Parameter]:
        """Stacked projections, plus the shared user table when ``train_users``."""
        params = [self.weight]
        if isinstance(self.user_embedding, nn.Parameter):
            params.append(self.user_embedding)
        return params

    # ----------------------------------------------------------------------------------------------- inputs
    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask[: mask.shape[0]].copy_(mask.detach().to(self.mask))

    def inputs(self, items: torch.Tensor) -> torch.Tensor:
        x = self.features[items]
        return x * (1.0 - self.mask) if self.input_mode == "variant" else x

    def item_vectors(self, items: torch.Tensor, env: int) -> torch.Tensor:
        """[len(items), k_id + k_f] under model ``env``."""
        return torch.cat([self.item_embedding[items], self.inputs(items) @ self.weight[env].T], dim=1)

    # ----------------------------------------------------------------------------------------------- losses
    def env_example_losses(
        self, env: int, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor
    ) -> torch.Tensor:
        """[b] backbone loss of each positive under model ``env`` (each unique item encoded once)."""
        all_items = torch.cat([pos_items, neg_items.reshape(-1)])
        unique, inverse = torch.unique(all_items, return_inverse=True)
        vectors = self.item_vectors(unique, env)
        user_vectors = self.user_embedding[users]
        b = users.shape[0]
        pos_scores = (user_vectors * vectors[inverse[:b]]).sum(-1)
        neg_vectors = vectors[inverse[b:]].view(b, -1, vectors.shape[1])
        neg_scores = torch.bmm(neg_vectors, user_vectors.unsqueeze(2)).squeeze(2)
        return self._per_example_loss(users, pos_items, pos_scores, neg_items, neg_scores)

    def env_example_losses_pooled(
        self, env: int, users: torch.Tensor, pos_items: torch.Tensor, pool: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """[b] loss under model ``env`` with negatives ``pool[positions]``: the b positives and the P pool items
        are encoded once and every user is scored against the pool with one matrix product."""
        b = users.shape[0]
        vectors = self.item_vectors(torch.cat([pos_items, pool]), env)
        user_vectors = self.user_embedding[users]
        pos_scores = (user_vectors * vectors[:b]).sum(-1)
        neg_scores = torch.gather(user_vectors @ vectors[b:].T, 1, positions)
        return self._per_example_loss(users, pos_items, pos_scores, pool[positions], neg_scores)

    def example_losses_pooled(
        self, users: torch.Tensor, pos_items: torch.Tensor, pools: torch.Tensor, positions: torch.Tensor,
        envs: torch.Tensor
    ) -> torch.Tensor:
        """[B] own-environment losses; environment k's negatives are ``pools[k][positions]`` (pools [E, P]).

        Fully batched over environments: rows are grouped by environment into a padded [E, max_b, ...] layout,
        so positives, pools and user-pool scores of all E models each take ONE bmm (no Python loop over E).
        """
        n_envs, d = self.n_envs, self.feature_dim
        b = users.shape[0]
        order = torch.argsort(envs, stable=True)
        sorted_envs = envs[order]
        counts = torch.bincount(envs, minlength=n_envs)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(b, device=users.device) - starts[sorted_envs]
        max_b = int(counts.max()) if b else 0
        users_s, pos_s, positions_s = users[order], pos_items[order], positions[order]
        weight_t = self.weight.transpose(1, 2)  # [E, d, k_f]
        padded = self.features.new_zeros(n_envs, max_b, d)
        padded[sorted_envs, slot] = self.inputs(pos_s)
        h_pos = torch.bmm(padded, weight_t)[sorted_envs, slot]  # [B, k_f], each row under its own model
        p = pools.shape[1]
        h_pool = torch.bmm(self.inputs(pools.reshape(-1)).view(n_envs, p, d), weight_t)  # [E, P, k_f]
        pool_vectors = torch.cat([self.item_embedding[pools], h_pool], dim=2)  # [E, P, k]
        user_vectors = self.user_embedding[users_s]
        pos_scores = (user_vectors * torch.cat([self.item_embedding[pos_s], h_pos], dim=1)).sum(-1)
        users_padded = user_vectors.new_zeros(n_envs, max_b, user_vectors.shape[1])
        users_padded[sorted_envs, slot] = user_vectors
        pool_scores = torch.bmm(users_padded, pool_vectors.transpose(1, 2))[sorted_envs, slot]  # [B, P]
        neg_scores = torch.gather(pool_scores, 1, positions_s)
        neg_items = pools[sorted_envs.unsqueeze(1), positions_s]
        per = self._per_example_loss(users_s, pos_s, pos_scores, neg_items, neg_scores)
        return per[torch.argsort(order)]

    def example_losses(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, envs: torch.Tensor
    ) -> torch.Tensor:
        """[B] loss of each positive under ITS OWN environment's model (rows grouped by environment)."""
        out = torch.zeros(users.shape[0], device=users.device, dtype=self.weight.dtype)
        parts, rows = [], []
        for env in torch.unique(envs).tolist():
            sel = torch.nonzero(envs == env, as_tuple=True)[0]
            parts.append(self.env_example_losses(int(env), users[sel], pos_items[sel], neg_items[sel]))
            rows.append(sel)
        if not parts:
            return out
        return out.index_put((torch.cat(rows),), torch.cat(parts))

    def penalty(self) -> torch.Tensor:
        """L2 on the projections (backbone weight) plus, for ``input="invrl"``, rho * mean|W_k * m|."""
        reg = self.l2 * self.weight.pow(2).sum()
        if self.input_mode == "invrl" and self.l1_rho > 0:
            reg = reg + self.l1_rho * (self.weight * self.mask).abs().mean()
        return reg

    # ------------------------------------------------------------------------------------------- relabeling
    @torch.no_grad()
    def score_all(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, E] scores of each pair under every model: one matmul with the stacked projections."""
        base = (self.user_embedding[users, : self.item_embedding.shape[1]] * self.item_embedding[items]).sum(-1)
        proj = self.inputs(items) @ self.weight.reshape(-1, self.feature_dim).T  # [B, E*k_f]
        user_f = self.user_embedding[users, self.item_embedding.shape[1]:]
        return base[:, None] + torch.einsum("bek,bk->be", proj.view(-1, self.n_envs, self.k_f), user_f)

    @torch.no_grad()
    def loss_all(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, chunk: int = 1024
    ) -> torch.Tensor:
        """[B, E] own loss of each positive under every model (negatives shared by all models)."""
        if users.shape[0] > chunk:
            return torch.cat([self.loss_all(users[s:s + chunk], pos_items[s:s + chunk], neg_items[s:s + chunk])
                              for s in range(0, users.shape[0], chunk)])
        all_items = torch.cat([pos_items, neg_items.reshape(-1)])
        unique, inverse = torch.unique(all_items, return_inverse=True)
        k_id = self.item_embedding.shape[1]
        proj = (self.inputs(unique) @ self.weight.reshape(-1, self.feature_dim).T).view(-1, self.n_envs, self.k_f)
        b, n_neg = users.shape[0], neg_items.shape[1]
        pos_idx, neg_idx = inverse[:b], inverse[b:].view(b, n_neg)
        user_id, user_f = self.user_embedding[users, :k_id], self.user_embedding[users, k_id:]
        q = self.item_embedding[unique]
        base_pos = (user_id * q[pos_idx]).sum(-1)
        base_neg = torch.bmm(q[neg_idx], user_id.unsqueeze(2)).squeeze(2)
        pos_f = torch.einsum("bek,bk->be", proj[pos_idx], user_f)  # [B, E]
        neg_f = torch.einsum("bnek,bk->bne", proj[neg_idx], user_f)  # [B, n_neg, E]
        out = [self._per_example_loss(users, pos_items, base_pos + pos_f[:, env], neg_items,
                                      base_neg + neg_f[:, :, env]) for env in range(self.n_envs)]
        return torch.stack(out, dim=1)


@dataclass
class HEIResult:
    """Output of :func:`identify_environments`."""

    labels: np.ndarray
    """int64 [n_train] environment of each training positive."""
    sizes: list[int]
    churn: list[float] = field(default_factory=list)
    """Fraction of labels changed at each EM iteration."""
    reseeded: list[dict[str, int]] = field(default_factory=list)
    """Empty environments re-seeded by splitting the largest: {iteration, empty, split_from, moved}."""
    iterations: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    models: EnvironmentModels | None = None
    label_pairs: Callable[[np.ndarray], np.ndarray] | None = None


def _labels_of(
    models: EnvironmentModels,
    pairs: np.ndarray,
    relabel: str,
    n_negatives: int,
    seed: int,
    keys: tuple[int, ...],
    collective: Collective,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, own-best score) of every pair; chunks round-robin over ranks, gathered on every rank."""
    device = models.weight.device
    n = len(pairs)
    n_chunks = max(1, math.ceil(n / RELABEL_CHUNK))
    local: list[tuple[int, np.ndarray, np.ndarray]] = []
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
        best, label = fit.max(dim=1)
        local.append((chunk, label.cpu().numpy().astype(np.int64), best.cpu().numpy()))
    gathered = collective.all_gather_objects(local) if collective.world_size > 1 else [local]
    labels = np.empty(n, dtype=np.int64)
    scores = np.empty(n, dtype=np.float64)
    for part in gathered:
        for chunk, lab, sc in part:
            labels[chunk * RELABEL_CHUNK: chunk * RELABEL_CHUNK + len(lab)] = lab
            scores[chunk * RELABEL_CHUNK: chunk * RELABEL_CHUNK + len(sc)] = sc
    return labels, scores


def _own_fit(models: EnvironmentModels, pairs: np.ndarray, env: int) -> np.ndarray:
    """Score of each pair under model ``env`` (used to split an environment in two)."""
    device = models.weight.device
    out = []
    for start in range(0, len(pairs), RELABEL_CHUNK):
        rows = pairs[start:start + RELABEL_CHUNK]
        s = models.score_all(torch.as_tensor(rows[:, 0], device=device), torch.as_tensor(rows[:, 1], device=device))
        out.append(s[:, env].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def reseed_empty(
    models: EnvironmentModels, pairs: np.ndarray, labels: np.ndarray, iteration: int
) -> list[dict[str, int]]:
    """Re-seed every empty environment by splitting the largest: its worse-fitting half (by the largest model's
    score) moves to the empty environment, whose model starts as a copy of the largest's. In place."""
    events = []
    for env in range(models.n_envs):
        sizes = np.bincount(labels, minlength=models.n_envs)
        if sizes[env] > 0:
            continue
        largest = int(np.argmax(sizes))
        members = np.flatnonzero(labels == largest)
        if len(members) < 2:
            continue
        fit = _own_fit(models, pairs[members], largest)
        order = np.argsort(fit, kind="stable")
        moved = members[order[: len(members) // 2]]
        labels[moved] = env
        with torch.no_grad():
            models.weight[env].copy_(models.weight[largest])
        event = {"iteration": iteration, "empty": env, "split_from": largest, "moved": len(moved)}
        logger.info("HEI: environment %d was empty; re-seeded with %d positives split from environment %d",
                    env, len(moved), largest)
        events.append(event)
    return events


def train_environment_models(
    models: EnvironmentModels,
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
            loss = data_loss + _replicated(models.penalty(), ws)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            collective.sync_gradients(params)
            optimizer.step()
            total = total + data_loss.detach() * batch.global_size
            if bar is not None:
                bar.update(1)
        history.append(float(collective.all_reduce_sum(total)) / n)
    if bar is not None:
        bar.close()
    return history


def identify_environments(
    models: EnvironmentModels,
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
) -> HEIResult:
    """Hard-EM: train the E models jointly, relabel every positive, repeat until <= change_tol labels change.

    ``init_labels`` warm-starts EM (later rounds); otherwise labels are drawn uniformly from a seeded generator.
    The returned ``label_pairs`` labels new (user, item) pairs (val/test positives) with the fitted models.
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
    result.reseeded.extend(reseed_empty(models, train, labels, 0))
    for iteration in range(cfg.max_iters):
        keys = (round_index, iteration)
        result.epoch_losses.extend(train_environment_models(
            models, train, labels, cfg.env_epochs, cfg.lr, batch_size, n_negatives, seed, keys, collective,
            progress, negative_pool))
        new_labels, _ = _labels_of(models, train, cfg.relabel, n_negatives, seed, keys, collective)
        churn = float(np.mean(new_labels != labels))
        labels = new_labels
        result.reseeded.extend(reseed_empty(models, train, labels, iteration + 1))
        result.churn.append(churn)
        result.iterations = iteration + 1
        logger.info("HEI round %d iteration %d: churn %.4f sizes %s", round_index, iteration, churn,
                    np.bincount(labels, minlength=n_envs).tolist())
        if churn <= cfg.change_tol:
            break
    result.labels = labels
    result.sizes = np.bincount(labels, minlength=n_envs).tolist()
    result.models = models
    result.label_pairs = make_label_pairs(models, cfg.relabel, n_negatives, seed)
    return result


def make_label_pairs(
    models: EnvironmentModels, relabel: str, n_negatives: int, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Labeller of new (user, item) pairs with the fitted models (same criterion as relabelling)."""

    def label_pairs(pairs: np.ndarray) -> np.ndarray:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.int64)
        labels, _ = _labels_of(models, pairs, relabel, n_negatives, seed, (0,), LocalCollective())
        return labels

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
