"""The click sampler and split builder that every synthetic scenario shares (painvrl/data/synthetic.py for the
planted-feature benchmark, painvrl/data/exposure.py for the exposure-bias one).

A scenario supplies user vectors ``w`` / ``v`` and item vectors ``z_inv`` / ``z_sp``; the utility of item ``i``
for user ``u`` in a period with strength ``s`` is ``w_u . z_inv[i] / sqrt(k_inv) + s * v_u . z_sp[i] /
sqrt(k_sp) + UTILITY_NOISE * g_ui`` with ``g_ui`` standard Gumbel noise drawn once per (user, item) (a period
may draw its own), and each period's clicks are the user's top-k items by that utility among the items not yet
taken (Gumbel top-k = sampling without replacement from the softmax of the utility). :func:`sample_splits` lays
the periods out (training environments, held-out items, the OOD environment) and cuts the clicks into the
splits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from painvrl.config import SyntheticConfig
from painvrl.data.dataset import GroundTruth, InteractionData
from painvrl.data.synthetic_layout import apportion, n_iid_new_items, n_ood_new_items, user_split

UTILITY_NOISE = 1.0
"""Scale of the Gumbel noise on click utility (both utility terms have unit variance before strengths)."""
CHUNK_ELEMENTS = 1 << 22
"""Target size (users x items) of one sampling chunk: 4M float32 values = 16 MB per working array."""
RELEASE_STREAM = 0x6E6577
"""Seed-stream tag of the draw of the items released only in the OOD environment (``ood_new_items``)."""
HOLDOUT_STREAM = 0x696964
"""Seed-stream tag of the draw of the held-out training-environment items (``iid_new_items``)."""


@dataclass
class SyntheticLatents:
    """The hidden variables behind a synthetic dataset (for analysis and tests; never for training)."""

    item_invariant: np.ndarray
    """float64 [n_items, n_invariant_factors]: z_inv."""
    item_spurious: np.ndarray
    """float64 [n_items, n_spurious_factors]: z_sp."""
    user_preference: np.ndarray
    """float64 [n_users, n_invariant_factors]: w_u, the same in every environment."""
    user_spurious: np.ndarray
    """float64 [n_users, n_spurious_factors]: v_u, scaled by each environment's strength."""
    strengths: list[float]
    """Spurious strength of training environments 0..E-1 followed by the OOD environment E."""

    def invariant_utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """w_u . z_inv[i] / sqrt(k_inv) for each (user, item) pair."""
        k = self.item_invariant.shape[1]
        return np.einsum("nk,nk->n", self.user_preference[users], self.item_invariant[items]) / math.sqrt(k)

    def spurious_utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """v_u . z_sp[i] / sqrt(k_sp) for each (user, item) pair (before the environment's strength)."""
        k = max(self.item_spurious.shape[1], 1)
        return np.einsum("nk,nk->n", self.user_spurious[users], self.item_spurious[items]) / math.sqrt(k)


def _subtract_gumbel(rng: np.random.Generator, utility: np.ndarray) -> None:
    """Add standard Gumbel noise (times UTILITY_NOISE) to ``utility`` in place: -log(X) with X ~ Exp(1)
    (= -log(-log U)); one log per value."""
    noise = rng.standard_exponential(utility.shape, dtype=np.float32)
    np.maximum(noise, np.float32(1e-30), out=noise)
    np.log(noise, out=noise)
    utility -= UTILITY_NOISE * noise


def sample_positives(rng: np.random.Generator, w: np.ndarray, v: np.ndarray, z_inv: np.ndarray,
                     z_sp: np.ndarray, strengths: list[float], counts: list[int],
                     blocked: list[np.ndarray | None] | None = None,
                     chunk_elements: int = CHUNK_ELEMENTS, fresh_noise: list[bool] | None = None) -> np.ndarray:
    """int64 [n_users, sum(counts)]: environment e's items occupy its block of columns, in environment order.
    ``blocked[e]`` (optional) lists items environment e may not click (items released in another one).
    ``fresh_noise[e]`` (optional): environment e draws Gumbel noise of its own instead of the noise every other
    environment shares (a separate session: the user's idiosyncratic taste does not carry over)."""
    import torch  # core dependency, imported here so that importing the data package stays light

    n_users, n_items = w.shape[0], z_inv.shape[0]
    inv_items = (z_inv / math.sqrt(z_inv.shape[1])).astype(np.float32).T
    sp_items = (z_sp / math.sqrt(max(z_sp.shape[1], 1))).astype(np.float32).T
    chunk = max(1, chunk_elements // n_items)
    out = np.empty((n_users, sum(counts)), dtype=np.int64)
    fresh = fresh_noise or [False] * len(counts)
    # Each fresh environment draws from a generator of its own, so that every stream is consumed row by row
    # whatever the chunk size (interleaving draws per chunk on one generator would tie the data to the chunking).
    fresh_rngs = {env: np.random.default_rng(rng.integers(1 << 62)) for env, own in enumerate(fresh) if own}
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        base = w[start:stop].astype(np.float32) @ inv_items
        relevance = base.copy() if any(fresh) else None
        _subtract_gumbel(rng, base)
        spurious = v[start:stop].astype(np.float32) @ sp_items if z_sp.shape[1] else None
        column = 0
        for env, (strength, k) in enumerate(zip(strengths, counts, strict=True)):
            period_base = base
            if env in fresh_rngs:
                assert relevance is not None
                period_base = relevance.copy()
                _subtract_gumbel(fresh_rngs[env], period_base)
            util = period_base.copy() if spurious is None else period_base + np.float32(strength) * spurious
            if blocked is not None and blocked[env] is not None:
                util[:, blocked[env]] = -np.inf
            if column:
                np.put_along_axis(util, out[start:stop, :column], -np.inf, axis=1)
            # torch.topk is ~7x faster than np.argpartition on long rows; ties have probability zero.
            top = torch.topk(torch.from_numpy(util), k, dim=1, sorted=True).indices
            out[start:stop, column:column + k] = top.numpy()
            column += k
    return out


def split_rows(rng: np.random.Generator, block: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Shuffle each row's columns independently and cut them into consecutive groups of the given sizes."""
    order = np.argsort(rng.random(block.shape), axis=1)
    shuffled = np.take_along_axis(block, order, axis=1)
    parts, start = [], 0
    for size in sizes:
        parts.append(shuffled[:, start:start + size])
        start += size
    return parts


def on_sphere(z: np.ndarray) -> np.ndarray:
    """Rows rescaled to norm sqrt(k): unit variance per coordinate, but equal utility variance for every item,
    so no item is planted as popular (the per-block L2 normalisation of features would hide the norm anyway)."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z * (math.sqrt(z.shape[1]) / np.maximum(norms, 1e-12))


def pairs(items: np.ndarray) -> np.ndarray:
    """[n_users, k] item matrix -> [n_users * k, 2] (user, item) pairs, user-major."""
    users = np.repeat(np.arange(items.shape[0], dtype=np.int64), items.shape[1])
    return np.stack([users, items.reshape(-1)], axis=1)


@dataclass
class SampledSplits:
    """The splits of one synthetic draw, with the training environment of every train / val / test pair."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    ood_val: np.ndarray
    ood_test: np.ndarray
    train_env: np.ndarray
    """int64 [n_train]: the training environment (period strength index) each train pair was clicked in."""
    val_env: np.ndarray
    test_env: np.ndarray
    new_items: np.ndarray | None
    """Items released only in the OOD environment (``ood_new_items``), sorted; None when there are none."""
    held_items: np.ndarray | None
    """Items held out of training for the IID splits (``iid_new_items``), sorted; None when there are none."""
    user_split: tuple[int, int, int]
    """Per-user train / val / test counts of the training-side positives."""

    def to_data(self, cfg: SyntheticConfig, features: dict[str, np.ndarray], ground_truth: GroundTruth,
                info: dict[str, Any]) -> InteractionData:
        """The dataset of this draw: its splits and candidate item groups, with ``info`` completed by the sizes
        of those groups."""
        info = {**info, "ood_new_items": 0 if self.new_items is None else int(self.new_items.size),
                "iid_new_items": 0 if self.held_items is None else int(self.held_items.size)}
        return InteractionData(name="synthetic", n_users=cfg.n_users, n_items=cfg.n_items, train=self.train,
                               val=self.val, test=self.test, features=features, ood_val=self.ood_val,
                               ood_test=self.ood_test, ood_candidates=self.new_items,
                               iid_candidates=self.held_items, ground_truth=ground_truth, info=info)


def sample_splits(seed: int, cfg: SyntheticConfig, rng: np.random.Generator, w: np.ndarray, v: np.ndarray,
                  z_inv: np.ndarray, z_sp: np.ndarray, strengths: list[float], train_counts: list[int],
                  n_ood: int, chunk_elements: int = CHUNK_ELEMENTS, fresh_ood_noise: bool = False) -> SampledSplits:
    """Draw every user's clicks in the training environments (strengths ``strengths[:-1]``, ``train_counts``
    clicks each) and the OOD environment (``strengths[-1]``, ``n_ood`` clicks) and cut them into the splits:
    the item groups of ``cfg.ood_new_items`` / ``cfg.iid_new_items`` (drawn on their own seed streams), the
    warm 8:1:1 or held-out-item IID split, and the OOD clicks halved into ``ood_val`` / ``ood_test``.
    ``fresh_ood_noise``: the OOD environment draws its own Gumbel noise (see :func:`sample_positives`)."""
    n_train_envs = len(train_counts)
    new_items: np.ndarray | None = None
    held_items: np.ndarray | None = None
    all_items = np.arange(cfg.n_items)
    n_new = n_ood_new_items(cfg)
    if n_new:
        # Own stream, so that every other draw (and the data of ood_new_items = 0) stays as it was.
        release_rng = np.random.default_rng([seed, RELEASE_STREAM])
        new_items = np.sort(release_rng.choice(cfg.n_items, size=n_new, replace=False))
    released = all_items if new_items is None else np.setdiff1d(all_items, new_items)
    n_iid_new = n_iid_new_items(cfg)
    if n_iid_new:
        holdout_rng = np.random.default_rng([seed, HOLDOUT_STREAM])
        held_items = np.sort(holdout_rng.choice(released, size=n_iid_new, replace=False))
    n_train_side = sum(train_counts)
    n_train, n_val, n_test = user_split(n_train_side)
    if held_items is None:
        period_counts = [*train_counts, n_ood]
        period_env = list(range(n_train_envs + 1))
        period_held = [False] * (n_train_envs + 1)
        blocked: list[np.ndarray | None] | None = None
        if new_items is not None:
            blocked = [*([new_items] * n_train_envs), released]
    else:
        # Cold-start IID: each training environment is two periods, clicks on the warm items (train) and on the
        # held-out items (val / test), in the environment's proportion of each.
        warm_items = np.setdiff1d(released, held_items)
        not_warm, not_held = np.setdiff1d(all_items, warm_items), np.setdiff1d(all_items, held_items)
        # Held-out clicks per environment in its share of the training clicks: val/test follow the mixture.
        held_counts = apportion(train_counts, n_val + n_test)
        period_counts, period_env, period_held, blocked = [], [], [], []
        for e, (count, held) in enumerate(zip(train_counts, held_counts, strict=True)):
            period_counts += [count - held, held]
            period_env += [e, e]
            period_held += [False, True]
            blocked += [not_warm, not_held]
        period_counts.append(n_ood)
        period_env.append(n_train_envs)
        period_held.append(False)
        blocked.append(None if new_items is None else released)
    period_strengths = [strengths[e] for e in period_env]
    fresh = [False] * (len(period_counts) - 1) + [fresh_ood_noise]
    positives = sample_positives(rng, w, v, z_inv, z_sp, period_strengths, period_counts, blocked,
                                 chunk_elements, fresh)

    env_of_column = np.repeat(np.asarray(period_env[:-1], dtype=np.int64), period_counts[:-1])
    if held_items is None:
        # Split column positions (not items) so each pair keeps its environment label.
        positions = np.broadcast_to(np.arange(n_train_side), (cfg.n_users, n_train_side))
        train_pos, val_pos, test_pos = split_rows(rng, positions, [n_train, n_val, n_test])
    else:
        is_held = np.repeat(np.asarray(period_held[:-1]), period_counts[:-1])
        train_pos = np.broadcast_to(np.flatnonzero(~is_held), (cfg.n_users, n_train))
        held_pos = np.broadcast_to(np.flatnonzero(is_held), (cfg.n_users, n_val + n_test))
        val_pos, test_pos = split_rows(rng, held_pos, [n_val, n_test])
    train_side = positives[:, :n_train_side]
    ood_val_items, ood_test_items = split_rows(rng, positives[:, n_train_side:], [n_ood // 2, n_ood - n_ood // 2])

    def take(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pairs(np.take_along_axis(train_side, pos, axis=1)), env_of_column[pos].reshape(-1)

    train, train_env = take(train_pos)
    val, val_env = take(val_pos)
    test, test_env = take(test_pos)
    return SampledSplits(train=train, val=val, test=test, ood_val=pairs(ood_val_items),
                         ood_test=pairs(ood_test_items), train_env=train_env, val_env=val_env, test_env=test_env,
                         new_items=new_items, held_items=held_items, user_split=(n_train, n_val, n_test))
