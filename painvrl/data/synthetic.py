"""Synthetic spurious-correlation benchmark with a known invariant feature mask (docs/algorithm.md).

Generative model (every draw comes from one ``numpy.random.Generator`` seeded with ``dataset.seed``):

- Items: invariant factors ``z_inv`` [n_items, n_invariant_factors] and spurious factors ``z_sp``
  [n_items, n_spurious_factors], each row uniform on the sphere of radius sqrt(k) (isotropic, unit variance
  per coordinate, and the same norm for every item so that exposure is balanced: no planted popularity).
- Features: each modality block ``m`` (``cfg.modality_dims[m]`` columns, named ``m0``, ``m1``, ...) has a
  random subset of columns driven ONLY by ``z_inv`` (``z_inv @ A_m``) and the rest driven ONLY by ``z_sp``
  (``z_sp @ B_m``), plus ``N(0, feature_noise^2)`` noise everywhere. The number of invariant columns of a block
  is proportional to ``n_invariant_factors / (n_invariant_factors + n_spurious_factors)`` (at least one of
  each kind). Mixing matrices have ``N(0, 1/k)`` entries so every column has unit signal variance.
  ``GroundTruth.invariant_dims`` marks the invariant columns over the concatenated blocks, in block order.
- Users: preference ``w_u ~ N(0, I)`` over ``z_inv`` (the same in every environment) and a spurious taste
  ``v_u = sqrt(rho) v + sqrt(1 - rho) e_u`` over ``z_sp``, with ``rho = cfg.spurious_shared``: a direction ``v``
  shared by everybody (on the sphere of radius sqrt(k_sp), like the items) and a personal part ``e_u ~ N(0, I)``.
  The default rho = 1 is one global spurious item property.
- Environments: the training environments ``e = 0 .. E-1`` have spurious strengths ``cfg.train_env_strengths``;
  the OOD environment (index ``E``) has ``cfg.ood_env_strength``. Utility of item ``i`` for user ``u`` in
  environment ``e``::

      util_e(u, i) = w_u . z_inv[i] / sqrt(k_inv) + s_e * v_u . z_sp[i] / sqrt(k_sp) + UTILITY_NOISE * g_ui

  with ``g_ui`` standard Gumbel noise drawn once per (user, item): the user's idiosyncratic taste for an item
  persists across environments; only the spurious strength changes. Both utility terms have unit variance.
  The default training strengths (+1.1, -1) with shares (3, 1) give the spurious term a net strength of +0.575
  in the training mixture (ERM uses it, at a small IID gain), and the OOD strength (-1) makes it actively
  misleading (see SyntheticConfig.train_env_strengths).
- Positives: EVERY user interacts in EVERY environment ("environments as periods of each user's history"):
  the OOD environment gets ``max(2, n // (E + 1))`` of the ``interactions_per_user`` positives and the rest is
  spread over the training environments by ``cfg.train_env_shares`` (equal when empty). Environments are
  sampled in order 0, 1, ..., E; in each the user takes the top-k items by perturbed utility among the items
  not already taken (Gumbel top-k = sampling without replacement from the softmax of the utility). This is
  done in user chunks so memory stays bounded (a few hundred MB at 36k users x 76k items).
- Cold-start OOD (``cfg.ood_new_items > 0``, default 0.25): that fraction of the items is released only in the OOD
  environment. The training environments never take them, the OOD environment takes only them, and
  ``InteractionData.ood_candidates`` lists them, so the OOD splits are ranked among the new items.
- Warm splits (``cfg.iid_new_items = 0``): each user's training-environment positives are split at random 8:1:1
  (at least one of each) into train / val / test, so val and test follow the same mixture of training
  environments (IID).
- Cold-start IID (``cfg.iid_new_items > 0``, default 0.15): that fraction of the items, drawn from those the training
  environments release, is held out of training. Each training environment is then two sampling periods: clicks
  on the other (warm) items, which form the train split, and clicks on the held-out items, which form val / test
  (the same per-user counts as the 8:1:1 split, spread over the environments in their shares).
  ``InteractionData.iid_candidates`` lists the held-out items, so the IID splits are ranked among them. The OOD
  environment's positives are split at random in half into ``ood_val`` and ``ood_test``. Environment labels are
  NOT visible to the learner; they are kept in ``GroundTruth.train_env / val_env / test_env`` (training
  environment index of each pair; OOD pairs all belong to environment ``E``, recorded in ``info``).

Because every item is a candidate for every user and each user takes a few dozen of hundreds of items,
exposure is balanced across items (no planted popularity) and val/test items are unseen by that user but seen
by others in training: generalisation runs mainly through the item features.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from painvrl.config import DatasetConfig, SyntheticConfig
from painvrl.data.dataset import GroundTruth, InteractionData
from painvrl.data.synthetic_layout import (
    apportion,
    check_possible,
    env_counts,
    n_iid_new_items,
    n_ood_new_items,
    user_split,
)

logger = logging.getLogger(__name__)

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


def _features(cfg: SyntheticConfig, rng: np.random.Generator, z_inv: np.ndarray,
              z_sp: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, list[int]]:
    """Per-modality feature blocks, the invariant-dims mask over their concatenation, invariant columns/block."""
    k_inv, k_sp = z_inv.shape[1], z_sp.shape[1]
    features: dict[str, np.ndarray] = {}
    masks: list[np.ndarray] = []
    n_inv_cols: list[int] = []
    for m, dim in enumerate(cfg.modality_dims):
        n_inv = dim if k_sp == 0 else min(dim - 1, max(1, round(dim * k_inv / (k_inv + k_sp))))
        invariant = np.zeros(dim, dtype=bool)
        invariant[rng.permutation(dim)[:n_inv]] = True
        block = np.empty((z_inv.shape[0], dim), dtype=np.float64)
        block[:, invariant] = z_inv @ rng.normal(0.0, 1.0 / math.sqrt(k_inv), size=(k_inv, n_inv))
        if k_sp:
            block[:, ~invariant] = z_sp @ rng.normal(0.0, 1.0 / math.sqrt(k_sp), size=(k_sp, dim - n_inv))
        block += rng.normal(0.0, 1.0, size=block.shape) * cfg.feature_noise
        features[f"m{m}"] = block.astype(np.float32)
        masks.append(invariant)
        n_inv_cols.append(n_inv)
    return features, np.concatenate(masks), n_inv_cols


def _sample_positives(rng: np.random.Generator, w: np.ndarray, v: np.ndarray, z_inv: np.ndarray,
                      z_sp: np.ndarray, strengths: list[float], counts: list[int],
                      blocked: list[np.ndarray | None] | None = None) -> np.ndarray:
    """int64 [n_users, sum(counts)]: environment e's items occupy its block of columns, in environment order.
    ``blocked[e]`` (optional) lists items environment e may not click (items released in another one)."""
    import torch  # core dependency, imported here so that importing the data package stays light

    n_users, n_items = w.shape[0], z_inv.shape[0]
    inv_items = (z_inv / math.sqrt(z_inv.shape[1])).astype(np.float32).T
    sp_items = (z_sp / math.sqrt(max(z_sp.shape[1], 1))).astype(np.float32).T
    chunk = max(1, CHUNK_ELEMENTS // n_items)
    out = np.empty((n_users, sum(counts)), dtype=np.int64)
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        base = w[start:stop].astype(np.float32) @ inv_items
        # Gumbel noise in place: -log(X) with X ~ Exp(1) (= -log(-log U)); one log per value.
        noise = rng.standard_exponential((stop - start, n_items), dtype=np.float32)
        np.maximum(noise, np.float32(1e-30), out=noise)
        np.log(noise, out=noise)
        base -= UTILITY_NOISE * noise
        del noise
        spurious = v[start:stop].astype(np.float32) @ sp_items if z_sp.shape[1] else None
        column = 0
        for env, (strength, k) in enumerate(zip(strengths, counts, strict=True)):
            util = base.copy() if spurious is None else base + np.float32(strength) * spurious
            if blocked is not None and blocked[env] is not None:
                util[:, blocked[env]] = -np.inf
            if column:
                np.put_along_axis(util, out[start:stop, :column], -np.inf, axis=1)
            # torch.topk is ~7x faster than np.argpartition on long rows; ties have probability zero.
            top = torch.topk(torch.from_numpy(util), k, dim=1, sorted=True).indices
            out[start:stop, column:column + k] = top.numpy()
            column += k
    return out


def _split_rows(rng: np.random.Generator, block: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Shuffle each row's columns independently and cut them into consecutive groups of the given sizes."""
    order = np.argsort(rng.random(block.shape), axis=1)
    shuffled = np.take_along_axis(block, order, axis=1)
    parts, start = [], 0
    for size in sizes:
        parts.append(shuffled[:, start:start + size])
        start += size
    return parts


def _on_sphere(z: np.ndarray) -> np.ndarray:
    """Rows rescaled to norm sqrt(k): unit variance per coordinate, but equal utility variance for every item,
    so no item is planted as popular (the per-block L2 normalisation of features would hide the norm anyway)."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z * (math.sqrt(z.shape[1]) / np.maximum(norms, 1e-12))


def _pairs(items: np.ndarray) -> np.ndarray:
    """[n_users, k] item matrix -> [n_users * k, 2] (user, item) pairs, user-major."""
    users = np.repeat(np.arange(items.shape[0], dtype=np.int64), items.shape[1])
    return np.stack([users, items.reshape(-1)], axis=1)


def make_synthetic(dataset: DatasetConfig) -> InteractionData:
    """Generate the synthetic spurious-correlation benchmark of ``dataset.synthetic`` (module docstring).

    Deterministic in ``dataset.seed``. Raises PainvrlInputError naming the field for impossible configurations.
    """
    return make_synthetic_with_latents(dataset)[0]


def make_synthetic_with_latents(dataset: DatasetConfig) -> tuple[InteractionData, SyntheticLatents]:
    """:func:`make_synthetic` plus the hidden latent factors it was generated from."""
    seed, cfg = dataset.seed, dataset.synthetic
    check_possible(cfg)
    train_counts, n_ood = env_counts(cfg)
    n_train_envs = len(train_counts)
    rng = np.random.default_rng(seed)
    z_inv = _on_sphere(rng.standard_normal((cfg.n_items, cfg.n_invariant_factors)))
    z_sp = _on_sphere(rng.standard_normal((cfg.n_items, cfg.n_spurious_factors)))
    features, invariant_dims, n_inv_cols = _features(cfg, rng, z_inv, z_sp)
    w = rng.standard_normal((cfg.n_users, cfg.n_invariant_factors))
    v = rng.standard_normal((cfg.n_users, cfg.n_spurious_factors))
    if cfg.spurious_shared > 0:
        # On the sphere of radius sqrt(k) like the items: a Gaussian draw's norm varies by a factor ~4 between
        # seeds at k = 4, and with one shared direction that factor IS the benchmark's spurious strength.
        shared = _on_sphere(rng.standard_normal((1, cfg.n_spurious_factors)))
        v = math.sqrt(cfg.spurious_shared) * shared + math.sqrt(1.0 - cfg.spurious_shared) * v

    strengths = [float(s) for s in cfg.train_env_strengths] + [float(cfg.ood_env_strength)]
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
    positives = _sample_positives(rng, w, v, z_inv, z_sp, period_strengths, period_counts, blocked)

    env_of_column = np.repeat(np.asarray(period_env[:-1], dtype=np.int64), period_counts[:-1])
    if held_items is None:
        # Split column positions (not items) so each pair keeps its environment label.
        positions = np.broadcast_to(np.arange(n_train_side), (cfg.n_users, n_train_side))
        train_pos, val_pos, test_pos = _split_rows(rng, positions, [n_train, n_val, n_test])
    else:
        is_held = np.repeat(np.asarray(period_held[:-1]), period_counts[:-1])
        train_pos = np.broadcast_to(np.flatnonzero(~is_held), (cfg.n_users, n_train))
        held_pos = np.broadcast_to(np.flatnonzero(is_held), (cfg.n_users, n_val + n_test))
        val_pos, test_pos = _split_rows(rng, held_pos, [n_val, n_test])
    train_side = positives[:, :n_train_side]
    ood_val_items, ood_test_items = _split_rows(rng, positives[:, n_train_side:], [n_ood // 2, n_ood - n_ood // 2])

    def take(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _pairs(np.take_along_axis(train_side, pos, axis=1)), env_of_column[pos].reshape(-1)

    train, train_env = take(train_pos)
    val, val_env = take(val_pos)
    test, test_env = take(test_pos)

    info: dict[str, Any] = {
        "source": "synthetic",
        "split": "random",
        "ood": "synthetic",
        "seed": seed,
        "n_invariant_factors": cfg.n_invariant_factors,
        "n_spurious_factors": cfg.n_spurious_factors,
        "modality_dims": list(cfg.modality_dims),
        "invariant_columns_per_block": n_inv_cols,
        "n_invariant_dims": int(invariant_dims.sum()),
        "feature_noise": cfg.feature_noise,
        "utility_noise": UTILITY_NOISE,
        "train_env_strengths": [float(s) for s in cfg.train_env_strengths],
        "ood_env_strength": float(cfg.ood_env_strength),
        "ood_env": n_train_envs,
        "positives_per_env": [*train_counts, n_ood],
        "user_split": [n_train, n_val, n_test],
        "spurious_shared": cfg.spurious_shared,
        "ood_new_items": 0 if new_items is None else int(new_items.size),
        "iid_new_items": 0 if held_items is None else int(held_items.size),
        "environments": "every user interacts in every environment; Gumbel top-k per environment without "
                        "replacement; spurious taste "
                        + {0.0: "per user", 1.0: "shared by all users"}.get(cfg.spurious_shared, "partly shared"),
    }
    logger.info("synthetic data: %d users, %d items, %d train / %d val / %d test / %d ood_val / %d ood_test",
                cfg.n_users, cfg.n_items, len(train), len(val), len(test), ood_val_items.size,
                ood_test_items.size)
    data = InteractionData(
        name="synthetic",
        n_users=cfg.n_users,
        n_items=cfg.n_items,
        train=train,
        val=val,
        test=test,
        features=features,
        ood_val=_pairs(ood_val_items),
        ood_test=_pairs(ood_test_items),
        ood_candidates=new_items,
        iid_candidates=held_items,
        ground_truth=GroundTruth(train_env=train_env, invariant_dims=invariant_dims, val_env=val_env,
                                 test_env=test_env),
        info=info,
    )
    latents = SyntheticLatents(item_invariant=z_inv, item_spurious=z_sp, user_preference=w, user_spurious=v,
                               strengths=strengths)
    return data, latents
