"""InteractionData: the one in-memory form every loader produces and every model reads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from painvrl.errors import PainvrlInputError


@dataclass
class GroundTruth:
    """What only a synthetic benchmark knows: used for scoring HEI (ARI) and masks (AUC), never for training."""

    train_env: np.ndarray | None = None
    """int64 [n_train]: true environment of each training positive."""
    invariant_dims: np.ndarray | None = None
    """bool [d]: True for dims of the concatenated feature matrix that carry only invariant signal."""
    val_env: np.ndarray | None = None
    """int64 [n_val]: true environment of each validation positive."""
    test_env: np.ndarray | None = None
    """int64 [n_test]: true environment of each test positive."""
    item_propensity: np.ndarray | None = None
    """float64 [n_items]: the true exposure probability of each item under the policy that logged the training
    clicks, normalised to max 1 (the exposure-bias benchmark; for IPS with the true propensities)."""


def _check_pairs(pairs: np.ndarray, name: str, n_users: int, n_items: int, source: str) -> np.ndarray:
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise PainvrlInputError(f"{source}: split '{name}' must be an [N, 2] array of (user, item), got "
                                f"shape {pairs.shape}")
    if not np.issubdtype(pairs.dtype, np.integer):
        raise PainvrlInputError(f"{source}: split '{name}' ids must be integers, got dtype {pairs.dtype}")
    if len(pairs):
        if pairs.min() < 0:
            raise PainvrlInputError(f"{source}: split '{name}' has negative ids")
        if pairs[:, 0].max() >= n_users:
            raise PainvrlInputError(f"{source}: split '{name}' has user id {int(pairs[:, 0].max())} >= "
                                    f"n_users={n_users}")
        if pairs[:, 1].max() >= n_items:
            raise PainvrlInputError(f"{source}: split '{name}' has item id {int(pairs[:, 1].max())} >= "
                                    f"n_items={n_items}")
    return pairs.astype(np.int64, copy=False)


@dataclass
class InteractionData:
    """Users, items, positives per split, per-modality item features and optional ground truth.

    Ids are 0-based and dense. Splits are int64 [N, 2] arrays of (user, item) positives.
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    features: dict[str, np.ndarray]
    """modality -> float32 [n_items, d_m]; row i describes item i."""
    ood_val: np.ndarray | None = None
    ood_test: np.ndarray | None = None
    feature_present: dict[str, np.ndarray] = field(default_factory=dict)
    """modality -> bool [n_items], False where an item lacks that modality (its block is all zeros and,
    having no bias, contributes nothing to the projection: missing, not a fake zero observation)."""
    train_timestamps: np.ndarray | None = None
    ood_candidates: np.ndarray | None = None
    """int64 sorted unique item ids that the OOD splits are ranked over (None: all items). Set when the OOD
    environment releases items of its own (cold-start OOD): every ood_val / ood_test item must be one of them."""
    iid_candidates: np.ndarray | None = None
    """int64 sorted unique item ids that the IID val / test splits are ranked over (None: all items). Set when
    items released in the training environments are held out of training (cold-start IID): every val / test item
    must be one of them and no train item may be."""
    ground_truth: GroundTruth | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Provenance: split builder, counts of dropped / deduplicated rows, source files."""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------------ checks
    def validate(self) -> None:
        source = self.info.get("source", self.name)
        if self.n_users < 1 or self.n_items < 1:
            raise PainvrlInputError(f"{source}: needs at least one user and one item")
        for split in ("train", "val", "test", "ood_val", "ood_test"):
            pairs = getattr(self, split)
            if pairs is not None:
                setattr(self, split, _check_pairs(pairs, split, self.n_users, self.n_items, source))
        if len(self.train) == 0:
            raise PainvrlInputError(f"{source}: the training split is empty")
        if len(self.val) == 0 or len(self.test) == 0:
            raise PainvrlInputError(f"{source}: the {'val' if len(self.val) == 0 else 'test'} split is empty")
        if not self.features:
            raise PainvrlInputError(f"{source}: no item features (at least one modality is required)")
        for modality, matrix in self.features.items():
            if matrix.ndim != 2 or matrix.shape[0] != self.n_items:
                raise PainvrlInputError(f"{source}: features '{modality}' have shape {matrix.shape}; expected "
                                        f"[{self.n_items}, d] (one row per item)")
            if not np.isfinite(matrix).all():
                bad = int((~np.isfinite(matrix)).any(axis=1).sum())
                raise PainvrlInputError(f"{source}: features '{modality}' contain NaN/inf in {bad} rows")
            self.features[modality] = np.ascontiguousarray(matrix, dtype=np.float32)
        for modality, present in self.feature_present.items():
            if modality not in self.features or present.shape != (self.n_items,):
                raise PainvrlInputError(f"{source}: presence mask '{modality}' does not match the features")
        if self.ood_candidates is not None:
            if not self.has_ood():
                raise PainvrlInputError(f"{source}: ood_candidates is set but the dataset has no OOD splits")
            self.ood_candidates = self._checked_candidates("ood_candidates", ("ood_val", "ood_test"), source)
        if self.iid_candidates is not None:
            self.iid_candidates = self._checked_candidates("iid_candidates", ("val", "test"), source)
            held_out = np.isin(self.train[:, 1], self.iid_candidates)
            if held_out.any():
                raise PainvrlInputError(f"{source}: {int(held_out.sum())} train positives are on items of "
                                        f"iid_candidates (e.g. item {int(self.train[held_out][0, 1])}); those "
                                        "items are held out of training")

    def _checked_candidates(self, field_name: str, splits: tuple[str, str], source: str) -> np.ndarray:
        """The candidate list ``field_name`` as sorted unique int64 ids; every positive of ``splits`` inside it."""
        array = np.asarray(getattr(self, field_name))
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
            raise PainvrlInputError(f"{source}: {field_name} must be a non-empty 1-D array of item ids, got "
                                    f"dtype {array.dtype} and shape {array.shape}")
        if array.min() < 0 or array.max() >= self.n_items:
            raise PainvrlInputError(f"{source}: {field_name} holds item ids outside [0, {self.n_items})")
        unique = np.unique(array).astype(np.int64)
        if unique.size != array.size:
            raise PainvrlInputError(f"{source}: {field_name} holds {array.size - unique.size} duplicate item ids")
        for split in splits:
            pairs = getattr(self, split)
            outside = ~np.isin(pairs[:, 1], unique)
            if outside.any():
                raise PainvrlInputError(f"{source}: {int(outside.sum())} {split} positives are on items outside "
                                        f"{field_name} (e.g. item {int(pairs[outside][0, 1])})")
        return unique

    # ---------------------------------------------------------------------------------------------- features
    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def modality_slices(self) -> dict[str, slice]:
        """Column range of each modality block in feature_matrix()."""
        slices, start = {}, 0
        for modality, matrix in self.features.items():
            slices[modality] = slice(start, start + matrix.shape[1])
            start += matrix.shape[1]
        return slices

    @property
    def feature_dim(self) -> int:
        return sum(m.shape[1] for m in self.features.values())

    def feature_matrix(self) -> np.ndarray:
        """float32 [n_items, d]: each block L2-normalised per row, concatenated (docs/algorithm.md)."""
        blocks = []
        for modality, matrix in self.features.items():
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            block = matrix / np.maximum(norms, 1e-12)
            present = self.feature_present.get(modality)
            if present is not None:
                block = block * present[:, None]
            blocks.append(block.astype(np.float32, copy=False))
        return np.ascontiguousarray(np.concatenate(blocks, axis=1))

    # ------------------------------------------------------------------------------------------------- misc
    def has_ood(self) -> bool:
        return self.ood_val is not None and self.ood_test is not None and len(self.ood_test) > 0

    def has_ood_validation(self) -> bool:
        """An OOD split with validation rows (a random-exposure set may carry OOD test rows only)."""
        return self.has_ood() and self.ood_val is not None and len(self.ood_val) > 0

    def fingerprint(self) -> str:
        """Content hash of splits and features (identifies the exact data a result was computed on)."""
        digest = hashlib.sha256()
        digest.update(f"{self.n_users},{self.n_items}".encode())
        for split in ("train", "val", "test", "ood_val", "ood_test"):
            pairs = getattr(self, split)
            digest.update(split.encode())
            if pairs is not None:
                digest.update(np.ascontiguousarray(pairs).tobytes())
        for modality, matrix in self.features.items():
            digest.update(modality.encode())
            digest.update(np.ascontiguousarray(matrix).tobytes())
        if self.ood_candidates is not None:  # only when set: fingerprints of all other data stay as they were
            digest.update(b"ood_candidates")
            digest.update(np.ascontiguousarray(self.ood_candidates).tobytes())
        if self.iid_candidates is not None:
            digest.update(b"iid_candidates")
            digest.update(np.ascontiguousarray(self.iid_candidates).tobytes())
        return digest.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "n_ood_val": 0 if self.ood_val is None else len(self.ood_val),
            "n_ood_test": 0 if self.ood_test is None else len(self.ood_test),
            "n_ood_candidates": self.n_items if self.ood_candidates is None else len(self.ood_candidates),
            "n_iid_candidates": self.n_items if self.iid_candidates is None else len(self.iid_candidates),
            "modalities": {m: int(x.shape[1]) for m, x in self.features.items()},
            "fingerprint": self.fingerprint(),
            **{k: v for k, v in self.info.items() if isinstance(v, int | float | str | bool)},
        }
