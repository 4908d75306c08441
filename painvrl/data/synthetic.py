"""Synthetic spurious-correlation benchmark with a known invariant feature mask (docs/algorithm.md).

``dataset.synthetic.scenario`` picks what is spurious: ``features`` (default, this module: planted spurious latent
factors whose effect changes by environment) or ``exposure`` (painvrl/data/exposure.py: exposure-biased logging
with a front-page flag among the features, uniform exposure in the OOD splits). Both draw their clicks with the
sampler of painvrl/data/synthetic_sampling.py.

Generative model of the ``features`` scenario (every draw comes from one ``numpy.random.Generator`` seeded with
``dataset.seed``):

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
from typing import Any

import numpy as np

from painvrl.config import DatasetConfig, SyntheticConfig
from painvrl.data.dataset import GroundTruth, InteractionData
from painvrl.data.exposure import make_exposure_with_latents
from painvrl.data.synthetic_layout import check_possible, env_counts
from painvrl.data.synthetic_sampling import (
    CHUNK_ELEMENTS,
    UTILITY_NOISE,
    SyntheticLatents,
    on_sphere,
    sample_splits,
)

__all__ = ["CHUNK_ELEMENTS", "UTILITY_NOISE", "SyntheticLatents", "make_synthetic", "make_synthetic_with_latents"]

logger = logging.getLogger(__name__)


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


def make_synthetic(dataset: DatasetConfig) -> InteractionData:
    """Generate the synthetic spurious-correlation benchmark of ``dataset.synthetic`` (module docstring).

    Deterministic in ``dataset.seed``. Raises PainvrlInputError naming the field for impossible configurations.
    """
    return make_synthetic_with_latents(dataset)[0]


def make_synthetic_with_latents(dataset: DatasetConfig) -> tuple[InteractionData, SyntheticLatents]:
    """:func:`make_synthetic` plus the hidden latent factors it was generated from."""
    seed, cfg = dataset.seed, dataset.synthetic
    if cfg.scenario == "exposure":
        return make_exposure_with_latents(dataset, CHUNK_ELEMENTS)
    check_possible(cfg)
    train_counts, n_ood = env_counts(cfg)
    n_train_envs = len(train_counts)
    rng = np.random.default_rng(seed)
    z_inv = on_sphere(rng.standard_normal((cfg.n_items, cfg.n_invariant_factors)))
    z_sp = on_sphere(rng.standard_normal((cfg.n_items, cfg.n_spurious_factors)))
    features, invariant_dims, n_inv_cols = _features(cfg, rng, z_inv, z_sp)
    w = rng.standard_normal((cfg.n_users, cfg.n_invariant_factors))
    v = rng.standard_normal((cfg.n_users, cfg.n_spurious_factors))
    if cfg.spurious_shared > 0:
        # On the sphere of radius sqrt(k) like the items: a Gaussian draw's norm varies by a factor ~4 between
        # seeds at k = 4, and with one shared direction that factor IS the benchmark's spurious strength.
        shared = on_sphere(rng.standard_normal((1, cfg.n_spurious_factors)))
        v = math.sqrt(cfg.spurious_shared) * shared + math.sqrt(1.0 - cfg.spurious_shared) * v

    strengths = [float(s) for s in cfg.train_env_strengths] + [float(cfg.ood_env_strength)]
    # CHUNK_ELEMENTS is read here, at call time, so that a test can shrink the chunks of this module.
    drawn = sample_splits(seed, cfg, rng, w, v, z_inv, z_sp, strengths, train_counts, n_ood, CHUNK_ELEMENTS)
    n_train, n_val, n_test = drawn.user_split

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
        "environments": "every user interacts in every environment; Gumbel top-k per environment without "
                        "replacement; spurious taste "
                        + {0.0: "per user", 1.0: "shared by all users"}.get(cfg.spurious_shared, "partly shared"),
    }
    logger.info("synthetic data: %d users, %d items, %d train / %d val / %d test / %d ood_val / %d ood_test",
                cfg.n_users, cfg.n_items, len(drawn.train), len(drawn.val), len(drawn.test), len(drawn.ood_val),
                len(drawn.ood_test))
    data = drawn.to_data(cfg, features, GroundTruth(train_env=drawn.train_env, invariant_dims=invariant_dims,
                                                    val_env=drawn.val_env, test_env=drawn.test_env), info)
    latents = SyntheticLatents(item_invariant=z_inv, item_spurious=z_sp, user_preference=w, user_spurious=v,
                               strengths=strengths)
    return data, latents
