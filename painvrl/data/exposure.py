"""Synthetic exposure-bias benchmark (``dataset.synthetic.scenario: exposure``): item EXPOSURE is the spurious
factor, as in logged recommendation data, and the OOD splits are what a random-exposure test set (Coat,
Yahoo!R3) holds.

Generative model (every draw comes from one ``numpy.random.Generator`` seeded with ``dataset.seed``):

- Items: a content vector ``z_i`` [n_items, n_invariant_factors] on the sphere of radius sqrt(k) (as in the
  planted-feature benchmark: no item is more relevant on average than another). Exposure: a front-page flag
  ``f_i ~ Bernoulli(exposure_front_fraction)`` and a propensity ``p_i``: 1 on the front page; off it,
  ``exposure_offpage_max * r_i^(-exposure_tail)`` with ``r_i`` the item's exposure rank among the off-page items
  (a random permutation: a Zipf long tail, independent of the content).
- Features: every column of every modality block is content, ``z @ A_m`` plus ``N(0, feature_noise^2)`` noise
  (``A_m`` has ``N(0, 1/k)`` entries: unit signal variance), except two columns of the first block ``m0`` at
  random positions: the standardised front-page flag and a noisy popularity signal, the standardised
  ``log p_i`` plus ``N(0, exposure_popularity_noise^2)``. ``GroundTruth.invariant_dims`` marks the content
  columns True and these two False, so a feature mask can remove the exposure channel.
- Users: preference ``w_u ~ N(0, I)`` over ``z``; relevance ``rel(u, i) = w_u . z_i / sqrt(k)`` (unit
  variance), plus standard Gumbel click noise: one draw per (user, item) for all training-policy clicks, and a
  draw of its own for the OOD clicks (a separate session under uniform exposure, so that with ``ood_new_items =
  0`` the noise that brought a front-page item into the user's training clicks does not also decide which items
  are left for the OOD clicks).
- Clicks: the sampler of painvrl/data/synthetic_sampling.py with the content as the invariant factor and
  ``log p_i`` as a one-dimensional spurious factor every user shares: a training-policy click on item ``i`` has
  probability proportional to ``p_i^s * exp(rel(u, i))`` with ``s = exposure_strength`` (Gumbel top-k: sampling
  without replacement), a uniform-exposure click to ``exp(rel(u, i))``.
- Periods: a third of each user's ``interactions_per_user`` positives (at least 2) are OOD clicks under uniform
  exposure; the rest are clicks under the training policy, split into train / val / test exactly as the
  planted-feature benchmark splits its training environments (warm 8:1:1, or with ``iid_new_items`` > 0 the val
  / test clicks on held-out items, ranked among them). With ``ood_new_items`` > 0 (default) the OOD clicks are on
  items released only then and ranked among them (``InteractionData.ood_candidates``), so the OOD splits measure
  the ranking of new items through their features with the exposure channel carrying no signal; the OOD clicks
  then do not depend on ``exposure_strength`` at all, so the same config at strength 0 trains on uniform-exposure
  clicks of the same size and is evaluated on the same OOD rows (the unbiased reference). With
  ``ood_new_items = 0`` the OOD clicks are on the training items, minus each user's own training-side clicks,
  as on Coat or Yahoo!R3.
- Ground truth: ``item_propensity`` = ``p^s`` normalised to max 1 (the true exposure probability of each item under
  the training policy, for IPS with the true propensities); ``train_env`` / ``val_env`` / ``test_env`` = 1 where
  the clicked item is on the front page, 0 where it is not (positives on front-page items carry the flag,
  sampled negatives mostly do not, so the flag's fit differs in sign between the two environments while the
  content's does not); ``invariant_dims`` as above.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from painvrl.config import DatasetConfig, SyntheticConfig
from painvrl.data.dataset import GroundTruth, InteractionData
from painvrl.data.synthetic_layout import check_item_groups, field_error
from painvrl.data.synthetic_sampling import (
    CHUNK_ELEMENTS,
    UTILITY_NOISE,
    SyntheticLatents,
    on_sphere,
    sample_splits,
)

logger = logging.getLogger(__name__)

EXPOSURE_COLUMNS = ("front_page", "popularity")
"""The exposure columns of the first modality block, in the order of ``info["exposure_columns"]``."""
MIN_TRAIN_SIDE = 3
"""Training-policy clicks each user needs: one each for train, val and test."""


def exposure_counts(cfg: SyntheticConfig) -> tuple[list[int], int]:
    """Training-policy clicks per user (one training environment) and uniform-exposure OOD clicks per user."""
    n = cfg.interactions_per_user
    n_ood = max(2, n // 3)
    if n - n_ood < MIN_TRAIN_SIDE:
        raise field_error("interactions_per_user", f"is {n}, but the exposure scenario needs at least "
                          f"{MIN_TRAIN_SIDE + 2} positives per user ({MIN_TRAIN_SIDE} training-policy clicks for the "
                          "8:1:1 train/val/test split, 2 uniform-exposure clicks for ood_val/ood_test)")
    return [n - n_ood], n_ood


def check_exposure(cfg: SyntheticConfig) -> None:
    """Refuse a ``scenario: exposure`` configuration that cannot be generated; every error names the field."""
    if cfg.n_users < 1:
        raise field_error("n_users", f"must be >= 1, got {cfg.n_users}")
    if cfg.n_invariant_factors < 1:
        raise field_error("n_invariant_factors", f"must be >= 1, got {cfg.n_invariant_factors}")
    if not cfg.modality_dims:
        raise field_error("modality_dims", "must list at least one modality block")
    needed = len(EXPOSURE_COLUMNS) + 1
    if cfg.modality_dims[0] < needed:
        raise field_error("modality_dims", f"block 0 has {cfg.modality_dims[0]} columns; with scenario exposure it "
                          f"needs >= {needed} ({len(EXPOSURE_COLUMNS)} exposure columns and one content column)")
    for m, dim in enumerate(cfg.modality_dims):
        if dim < 1:
            raise field_error("modality_dims", f"block {m} has {dim} columns; each block needs >= 1")
    if not (math.isfinite(cfg.feature_noise) and cfg.feature_noise >= 0):
        raise field_error("feature_noise", f"must be a finite value >= 0, got {cfg.feature_noise}")
    if not (math.isfinite(cfg.exposure_front_fraction) and 0.0 <= cfg.exposure_front_fraction <= 1.0):
        raise field_error("exposure_front_fraction", f"must be in [0, 1], got {cfg.exposure_front_fraction}")
    if not (math.isfinite(cfg.exposure_offpage_max) and 0.0 < cfg.exposure_offpage_max <= 1.0):
        raise field_error("exposure_offpage_max", f"must be in (0, 1], got {cfg.exposure_offpage_max}")
    for name in ("exposure_tail", "exposure_strength", "exposure_popularity_noise"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise field_error(name, f"must be a finite value >= 0, got {value}")
    if cfg.interactions_per_user > cfg.n_items:
        raise field_error("interactions_per_user", f"is {cfg.interactions_per_user}, more than n_items="
                          f"{cfg.n_items}: a user cannot interact with more distinct items than exist")
    train_counts, n_ood = exposure_counts(cfg)
    check_item_groups(cfg, train_counts, n_ood)


def item_exposure(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(front-page flag bool [n_items], exposure propensity float64 [n_items], 1 on the front page)."""
    front = rng.random(cfg.n_items) < cfg.exposure_front_fraction
    propensity = np.ones(cfg.n_items, dtype=np.float64)
    off_page = np.flatnonzero(~front)
    ranks = rng.permutation(off_page.size) + 1.0
    propensity[off_page] = cfg.exposure_offpage_max * ranks ** (-cfg.exposure_tail)
    return front, propensity


def _standardised(x: np.ndarray) -> np.ndarray:
    std = float(x.std())
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def _features(cfg: SyntheticConfig, rng: np.random.Generator, z: np.ndarray, front: np.ndarray,
              propensity: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, list[int]]:
    """Per-modality feature blocks, the invariant-dims mask over their concatenation, and the positions of the
    exposure columns (EXPOSURE_COLUMNS order) in the first block."""
    k = z.shape[1]
    features: dict[str, np.ndarray] = {}
    masks: list[np.ndarray] = []
    exposure_columns: list[int] = []
    for m, dim in enumerate(cfg.modality_dims):
        invariant = np.ones(dim, dtype=bool)
        if m == 0:
            exposure_columns = [int(c) for c in rng.permutation(dim)[:len(EXPOSURE_COLUMNS)]]
            invariant[exposure_columns] = False
        block = np.empty((z.shape[0], dim), dtype=np.float64)
        block[:, invariant] = z @ rng.normal(0.0, 1.0 / math.sqrt(k), size=(k, int(invariant.sum())))
        if m == 0:
            popularity_noise = rng.normal(0.0, 1.0, size=z.shape[0]) * cfg.exposure_popularity_noise
            block[:, exposure_columns[0]] = _standardised(front.astype(np.float64))
            block[:, exposure_columns[1]] = _standardised(np.log(propensity)) + popularity_noise
        block += rng.normal(0.0, 1.0, size=block.shape) * cfg.feature_noise
        features[f"m{m}"] = block.astype(np.float32)
        masks.append(invariant)
    return features, np.concatenate(masks), exposure_columns


def _front_share(pairs: np.ndarray, front: np.ndarray) -> float:
    return float(front[pairs[:, 1]].mean()) if len(pairs) else 0.0


def uniform_exposure(dataset: DatasetConfig) -> DatasetConfig:
    """The same exposure-scenario dataset with ``exposure_strength`` 0: uniform-exposure training clicks of the
    same size, the same items, features and users (and, with ``ood_new_items`` > 0, the same OOD rows)."""
    return dataclasses.replace(dataset, synthetic=dataclasses.replace(dataset.synthetic, exposure_strength=0.0))


def make_exposure(dataset: DatasetConfig) -> InteractionData:
    """Generate the exposure-bias benchmark of ``dataset.synthetic`` (module docstring). Deterministic in
    ``dataset.seed``; raises PainvrlInputError naming the field for impossible configurations."""
    return make_exposure_with_latents(dataset)[0]


def make_exposure_with_latents(dataset: DatasetConfig,
                               chunk_elements: int = CHUNK_ELEMENTS) -> tuple[InteractionData, SyntheticLatents]:
    """:func:`make_exposure` plus its hidden variables: ``item_invariant`` = the content vectors,
    ``item_spurious`` = ``log p`` [n_items, 1], ``user_spurious`` = ones [n_users, 1] and ``strengths`` =
    (exposure_strength, 0) for the training policy and the uniform OOD exposure."""
    seed, cfg = dataset.seed, dataset.synthetic
    check_exposure(cfg)
    train_counts, n_ood = exposure_counts(cfg)
    rng = np.random.default_rng(seed)
    z = on_sphere(rng.standard_normal((cfg.n_items, cfg.n_invariant_factors)))
    front, propensity = item_exposure(cfg, rng)
    features, invariant_dims, exposure_columns = _features(cfg, rng, z, front, propensity)
    w = rng.standard_normal((cfg.n_users, cfg.n_invariant_factors))
    log_propensity = np.log(propensity)[:, None]
    shared = np.ones((cfg.n_users, 1))
    strengths = [float(cfg.exposure_strength), 0.0]
    drawn = sample_splits(seed, cfg, rng, w, shared, z, log_propensity, strengths, train_counts, n_ood,
                          chunk_elements, fresh_ood_noise=True)
    policy = propensity ** cfg.exposure_strength
    item_propensity = policy / policy.max()
    env = front.astype(np.int64)
    shares = {split: _front_share(pairs, front) for split, pairs in
              (("train", drawn.train), ("val", drawn.val), ("test", drawn.test), ("ood_val", drawn.ood_val),
               ("ood_test", drawn.ood_test))}
    info: dict[str, Any] = {
        "source": "synthetic",
        "scenario": "exposure",
        "split": "random",
        "ood": "synthetic",
        "seed": seed,
        "n_invariant_factors": cfg.n_invariant_factors,
        "modality_dims": list(cfg.modality_dims),
        "exposure_columns": dict(zip(EXPOSURE_COLUMNS, exposure_columns, strict=True)),
        "n_invariant_dims": int(invariant_dims.sum()),
        "feature_noise": cfg.feature_noise,
        "utility_noise": UTILITY_NOISE,
        "exposure_front_fraction": cfg.exposure_front_fraction,
        "exposure_offpage_max": cfg.exposure_offpage_max,
        "exposure_tail": cfg.exposure_tail,
        "exposure_strength": cfg.exposure_strength,
        "exposure_popularity_noise": cfg.exposure_popularity_noise,
        "n_front_items": int(front.sum()),
        **{f"front_share_{split}": round(share, 4) for split, share in shares.items()},
        "positives_per_period": [*train_counts, n_ood],
        "user_split": list(drawn.user_split),
        "environments": "train/val/test environment = front page of the clicked item (1) or not (0); training "
                        "clicks follow the exposure-biased policy, OOD clicks uniform exposure",
    }
    logger.info("synthetic exposure data: %d users, %d items (%d on the front page), front-page click share "
                "train %.3f / ood_test %.3f", cfg.n_users, cfg.n_items, int(front.sum()), shares["train"],
                shares["ood_test"])
    data = drawn.to_data(cfg, features, GroundTruth(
        train_env=env[drawn.train[:, 1]], invariant_dims=invariant_dims, val_env=env[drawn.val[:, 1]],
        test_env=env[drawn.test[:, 1]], item_propensity=item_propensity), info)
    latents = SyntheticLatents(item_invariant=z, item_spurious=log_propensity, user_preference=w,
                               user_spurious=shared, strengths=strengths)
    return data, latents
