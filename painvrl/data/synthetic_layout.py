"""How the synthetic benchmark apportions each user's positives over the environments and its items over the
training, held-out and OOD-only groups, and the check that a configuration can be generated at all (every
error names the ``dataset.synthetic`` field)."""

from __future__ import annotations

import math

import numpy as np

from painvrl.config import SyntheticConfig
from painvrl.errors import PainvrlInputError

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Per-user train / val / test fractions of the training environments' positives."""


def _fail(field: str, message: str) -> PainvrlInputError:
    return PainvrlInputError(f"synthetic dataset: config field 'dataset.synthetic.{field}' {message}")


def field_error(field: str, message: str) -> PainvrlInputError:
    """The error for a bad ``dataset.synthetic.<field>``, naming it (for the other synthetic scenarios' checks)."""
    return _fail(field, message)


def env_counts(cfg: SyntheticConfig) -> tuple[list[int], int]:
    """Positives per user in each training environment and in the OOD environment (validated)."""
    n_train_envs = len(cfg.train_env_strengths)
    n = cfg.interactions_per_user
    n_ood = max(2, n // (n_train_envs + 1))
    n_train_side = n - n_ood
    needed = max(3, n_train_envs) + 2
    if n < needed:
        raise _fail("interactions_per_user", f"is {n}, but with {n_train_envs} training environment(s) each "
                    f"user needs at least {needed} positives (>= 3 for the 8:1:1 train/val/test split, >= 1 "
                    f"per training environment, >= 2 for ood_val/ood_test)")
    shares = cfg.train_env_shares or [1.0] * n_train_envs
    return apportion(shares, n_train_side, minimum=1), n_ood


def apportion(weights: list[float] | list[int], total: int, minimum: int = 0) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest-remainder rounding, at least ``minimum`` each."""
    w = np.asarray(weights, dtype=np.float64)
    raw = w / w.sum() * total
    counts = np.maximum(np.floor(raw).astype(np.int64), minimum)
    while counts.sum() > total:
        counts[int(np.argmax(counts))] -= 1
    for e in np.argsort(-(raw - np.floor(raw)), kind="stable")[: total - int(counts.sum())]:
        counts[e] += 1
    return [int(c) for c in counts]


def check_possible(cfg: SyntheticConfig) -> None:
    if cfg.n_users < 1:
        raise _fail("n_users", f"must be >= 1, got {cfg.n_users}")
    if cfg.n_invariant_factors < 1:
        raise _fail("n_invariant_factors", f"must be >= 1, got {cfg.n_invariant_factors}")
    if cfg.n_spurious_factors < 0:
        raise _fail("n_spurious_factors", f"must be >= 0, got {cfg.n_spurious_factors}")
    if not cfg.modality_dims:
        raise _fail("modality_dims", "must list at least one modality block")
    min_dim = 2 if cfg.n_spurious_factors > 0 else 1
    for m, dim in enumerate(cfg.modality_dims):
        if dim < min_dim:
            raise _fail("modality_dims", f"block {m} has {dim} columns; each block needs >= {min_dim} (one "
                        "invariant column and, with spurious factors, one spurious column)")
    if not cfg.train_env_strengths:
        raise _fail("train_env_strengths", "must list at least one training environment")
    strengths = [*cfg.train_env_strengths, cfg.ood_env_strength]
    if not all(math.isfinite(s) for s in strengths):
        raise _fail("train_env_strengths", f"and ood_env_strength must be finite, got {strengths}")
    if cfg.train_env_shares:
        if len(cfg.train_env_shares) != len(cfg.train_env_strengths):
            raise _fail("train_env_shares", f"has {len(cfg.train_env_shares)} entries but train_env_strengths has "
                        f"{len(cfg.train_env_strengths)}; give one share per training environment (or none)")
        if not all(math.isfinite(x) and x > 0 for x in cfg.train_env_shares):
            raise _fail("train_env_shares", f"must be finite and > 0, got {list(cfg.train_env_shares)}")
    if not (math.isfinite(cfg.spurious_shared) and 0.0 <= cfg.spurious_shared <= 1.0):
        raise _fail("spurious_shared", f"must be in [0, 1], got {cfg.spurious_shared}")
    if not (math.isfinite(cfg.feature_noise) and cfg.feature_noise >= 0):
        raise _fail("feature_noise", f"must be a finite value >= 0, got {cfg.feature_noise}")
    if cfg.interactions_per_user > cfg.n_items:
        raise _fail("interactions_per_user", f"is {cfg.interactions_per_user}, more than n_items="
                    f"{cfg.n_items}: a user cannot interact with more distinct items than exist")
    train_counts, n_ood = env_counts(cfg)
    check_item_groups(cfg, train_counts, n_ood)


def check_item_groups(cfg: SyntheticConfig, train_counts: list[int], n_ood: int) -> None:
    """ood_new_items / iid_new_items leave enough items for each user's clicks in every period (``train_counts``
    per training environment, ``n_ood`` in the OOD one)."""
    if not (math.isfinite(cfg.ood_new_items) and 0.0 <= cfg.ood_new_items < 1.0):
        raise _fail("ood_new_items", f"must be in [0, 1), got {cfg.ood_new_items}")
    if not (math.isfinite(cfg.iid_new_items) and 0.0 <= cfg.iid_new_items < 1.0):
        raise _fail("iid_new_items", f"must be in [0, 1), got {cfg.iid_new_items}")
    n_new, n_iid_new = n_ood_new_items(cfg), n_iid_new_items(cfg)
    n_warm = cfg.n_items - n_new - n_iid_new
    n_train, n_val, n_test = user_split(sum(train_counts))
    if n_new and n_new < n_ood:
        raise _fail("ood_new_items", f"is {cfg.ood_new_items}: {n_new} new items, but each user clicks {n_ood} "
                    "items in the OOD environment (all new)")
    if n_iid_new and n_iid_new < n_val + n_test:
        raise _fail("iid_new_items", f"is {cfg.iid_new_items}: {n_iid_new} held-out items, but each user's val "
                    f"and test positives are {n_val + n_test} distinct held-out items")
    needed = n_train if n_iid_new else sum(train_counts)
    if n_warm < needed:
        field_name = "iid_new_items" if n_iid_new else "ood_new_items"
        raise _fail(field_name, f"leaves {n_warm} items to the training environments (ood_new_items="
                    f"{cfg.ood_new_items}, iid_new_items={cfg.iid_new_items}), but each user clicks {needed} of "
                    "them in training")


def n_ood_new_items(cfg: SyntheticConfig) -> int:
    return round(cfg.ood_new_items * cfg.n_items)


def n_iid_new_items(cfg: SyntheticConfig) -> int:
    return round(cfg.iid_new_items * cfg.n_items)


def user_split(n_train_side: int) -> tuple[int, int, int]:
    """Per-user train / val / test counts of the training environments' positives (SPLIT_FRACTIONS)."""
    n_val = max(1, round(n_train_side * SPLIT_FRACTIONS[1]))
    n_test = max(1, round(n_train_side * SPLIT_FRACTIONS[2]))
    return n_train_side - n_val - n_test, n_val, n_test
