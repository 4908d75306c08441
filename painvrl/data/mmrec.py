"""Loader for MMRec-style datasets (Amazon Baby / Sports / Clothing ... as distributed with MMRec).

Folder layout::

    DIR/<name>.inter      TSV with header; columns userID, itemID, x_label (required), rating, timestamp
                          (optional; rating is ignored: every row is a positive)
    DIR/<modality>_feat.npy   one float matrix per modality, row i = item i (image_feat.npy -> "image")

``x_label``: 0 train, 1 valid, 2 test, and our extension 3 OOD valid, 4 OOD test. Ids are 0-based.

Sizes: ``n_users = max userID + 1``. ``n_items`` = the number of feature rows, which must be the same in
every feature file and at least ``max itemID + 1``: more rows than ids is fine (items without interactions
keep their features and stay rankable), fewer is an error (some ids would have no features).

Clean-up (counts in ``data.info``): repeated pairs are removed per split, evaluation pairs of users absent
from training are dropped, evaluation pairs already positive in training are dropped (see
:func:`painvrl.data.cleaning.clean_splits`). Train timestamps (when the column exists) follow the train
pairs.

The loader always returns the split stored in the file (``info["split"] = "explicit"``); re-splitting for
``dataset.split`` / ``dataset.ood`` builders is the registry's business. OOD splits are set when rows with
x_label 4 exist (``info["ood"] = "explicit"``); ``dataset.ood = "explicit"`` without such rows is an
error. A file with OOD test rows but no OOD validation rows (a random-exposure test set, as Coat or Yahoo!R3
ship) gets ``dataset.ood_val_fraction`` of each user's OOD test rows as OOD validation, or no OOD validation
at all when that fraction is 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from painvrl.config import DatasetConfig
from painvrl.data.cleaning import clean_splits
from painvrl.data.dataset import InteractionData
from painvrl.data.safeio import as_feature_matrix, load_npy
from painvrl.errors import PainvrlInputError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
OPTIONAL_COLUMNS = ("rating", "timestamp")
OOD_VAL_STREAM = 0x6F6F6476
"""Seed-stream tag of the per-user draw of OOD validation rows out of OOD test rows (``dataset.ood_val_fraction``)."""
SPLIT_LABELS = {"train": 0, "val": 1, "test": 2, "ood_val": 3, "ood_test": 4}
FEATURE_SUFFIX = "_feat.npy"


def _find_inter(folder: Path) -> Path:
    if not folder.is_dir():
        raise PainvrlInputError(f"{folder}: dataset folder not found (dataset.path)")
    inter = sorted(folder.glob("*.inter"))
    if not inter:
        raise PainvrlInputError(f"{folder}: no *.inter interaction file (MMRec format expects "
                                "DIR/<name>.inter)")
    if len(inter) > 1:
        raise PainvrlInputError(f"{folder}: several *.inter files ({', '.join(p.name for p in inter)}); "
                                "keep exactly one")
    return inter[0]


def _numeric_column(frame: pd.DataFrame, column: str, path: Path, integer: bool) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raw = frame[column].iloc[row]
        what = "missing value" if pd.isna(raw) else f"non-numeric value {str(raw)!r}"
        raise PainvrlInputError(f"{path}: column '{column}' has a {what} at line {row + 2} "
                                f"({int(bad.sum())} bad rows in total)")
    array = values.to_numpy()
    if not np.isfinite(array.astype(np.float64)).all():
        raise PainvrlInputError(f"{path}: column '{column}' has infinite values")
    if integer:
        if array.dtype.kind == "f":
            fractional = array != np.floor(array)
            if fractional.any():
                row = int(np.flatnonzero(fractional)[0])
                raise PainvrlInputError(f"{path}: column '{column}' must hold integers, got {array[row]} at "
                                        f"line {row + 2}")
        array = array.astype(np.int64)
        negative = array < 0
        if negative.any():
            row = int(np.flatnonzero(negative)[0])
            raise PainvrlInputError(f"{path}: column '{column}' has negative id {int(array[row])} at line "
                                    f"{row + 2} (ids are 0-based)")
    return array


def read_inter(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Parse and check an ``.inter`` file.

    Returns (pairs int64 [N, 2], x_label int64 [N], timestamps [N] or None)."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise PainvrlInputError(f"{path}: file is empty (expected a TSV header userID, itemID, rating, "
                                "timestamp, x_label)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PainvrlInputError(f"{path}: not a readable tab-separated file ({err})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise PainvrlInputError(f"{path}: missing required column(s) {missing}; found {list(frame.columns)} "
                                "(the file must be tab-separated with a header row)")
    if len(frame) == 0:
        raise PainvrlInputError(f"{path}: has a header but no interactions")
    users = _numeric_column(frame, "userID", path, integer=True)
    items = _numeric_column(frame, "itemID", path, integer=True)
    labels = _numeric_column(frame, "x_label", path, integer=True)
    unknown = ~np.isin(labels, list(SPLIT_LABELS.values()))
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise PainvrlInputError(f"{path}: column 'x_label' must be 0 train, 1 valid, 2 test, 3 OOD valid or "
                                f"4 OOD test; got {int(labels[row])} at line {row + 2}")
    if "rating" in frame.columns:
        _numeric_column(frame, "rating", path, integer=False)
    timestamps = None
    if "timestamp" in frame.columns:
        timestamps = _numeric_column(frame, "timestamp", path, integer=False)
        if (timestamps == np.floor(timestamps)).all():
            timestamps = timestamps.astype(np.int64)
    return np.stack([users, items], axis=1), labels, timestamps


def _feature_files(folder: Path, wanted: list[str]) -> dict[str, Path]:
    files = {p.name[: -len(FEATURE_SUFFIX)]: p for p in sorted(folder.glob(f"*{FEATURE_SUFFIX}"))}
    if not files:
        raise PainvrlInputError(f"{folder}: no item feature file (MMRec format expects one "
                                f"<modality>{FEATURE_SUFFIX} per modality, e.g. image_feat.npy)")
    if wanted:
        absent = [m for m in wanted if m not in files]
        if absent:
            raise PainvrlInputError(f"{folder}: dataset.modalities asks for {absent}, but only "
                                    f"{sorted(files)} have a <modality>{FEATURE_SUFFIX} file")
        files = {m: files[m] for m in wanted}
    return files


def carve_ood_validation(ood_test: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(OOD validation, OOD test): ``floor(fraction * n_u)`` of each user's OOD test rows, drawn with ``seed``,
    move into OOD validation (none when ``fraction`` is 0)."""
    if fraction <= 0 or len(ood_test) == 0:
        return ood_test[:0], ood_test
    rng = np.random.default_rng([seed, OOD_VAL_STREAM])
    order = np.lexsort((rng.random(len(ood_test)), ood_test[:, 0]))  # users grouped, random order within
    users = ood_test[order, 0]
    starts = np.searchsorted(users, users, side="left")
    rank = np.arange(len(users)) - starts
    counts = np.bincount(users)[users]
    to_val = rank < np.floor(fraction * counts)
    return ood_test[order[to_val]], ood_test[order[~to_val]]


def load_mmrec(path: Path | str, cfg: DatasetConfig) -> InteractionData:
    """Load an MMRec-format folder into InteractionData (see the module docstring for the rules)."""
    folder = Path(path)
    inter_path = _find_inter(folder)
    pairs, labels, timestamps = read_inter(inter_path)
    feature_paths = _feature_files(folder, list(cfg.modalities))

    features: dict[str, np.ndarray] = {}
    for modality, feature_path in feature_paths.items():
        features[modality] = as_feature_matrix(load_npy(feature_path), feature_path)
    rows = {feature_paths[m].name: f.shape[0] for m, f in features.items()}
    if len(set(rows.values())) > 1:
        raise PainvrlInputError(f"{folder}: feature files disagree on the number of items (rows): {rows}")
    n_items = next(iter(rows.values()))
    needed = int(pairs[:, 1].max()) + 1
    if n_items < needed:
        name = next(iter(rows))
        raise PainvrlInputError(f"{folder / name}: has {n_items} rows but {inter_path.name} uses item ids up "
                                f"to {needed - 1}; every item id needs a feature row (row i = item i)")
    n_users = int(pairs[:, 0].max()) + 1

    splits = {name: pairs[labels == label] for name, label in SPLIT_LABELS.items()}
    for name in ("train", "val", "test"):
        if len(splits[name]) == 0:
            raise PainvrlInputError(f"{inter_path}: no rows with x_label {SPLIT_LABELS[name]} ({name} split "
                                    "is empty)")
    has_ood = len(splits["ood_test"]) > 0
    if len(splits["ood_val"]) > 0 and not has_ood:
        raise PainvrlInputError(f"{inter_path}: has OOD validation rows (x_label 3) but no OOD test rows "
                                "(x_label 4)")
    if has_ood and len(splits["ood_val"]) == 0:
        splits["ood_val"], splits["ood_test"] = carve_ood_validation(splits["ood_test"], cfg.ood_val_fraction,
                                                                     cfg.seed)
    elif has_ood and cfg.ood_val_fraction > 0:
        raise PainvrlInputError(f"config field 'dataset.ood_val_fraction': {inter_path} has its own OOD "
                                "validation rows (x_label 3); carving more out of its OOD test rows is refused")
    elif not has_ood and cfg.ood == "explicit":
        raise PainvrlInputError(f"{inter_path}: dataset.ood is 'explicit' but there are no OOD rows "
                                "(x_label 3 OOD valid / 4 OOD test)")
    train_timestamps = None if timestamps is None else timestamps[labels == SPLIT_LABELS["train"]]

    evaluation = {name: splits[name] for name in ("val", "test", "ood_val", "ood_test")
                  if name in ("val", "test") or has_ood}
    train, evaluation, train_timestamps, counts = clean_splits(splits["train"], evaluation,
                                                               train_timestamps)
    for name, split in evaluation.items():
        if len(split) == 0 and not (name == "ood_val" and cfg.ood_val_fraction == 0):
            raise PainvrlInputError(f"{inter_path}: the {name} split is empty after dropping pairs of users "
                                    "without training rows and pairs already in training")
    if counts["duplicates_removed"] or counts["cold_user_pairs_dropped"] or counts["seen_in_train_dropped"]:
        log.info("%s: removed %d duplicate pairs, dropped %d evaluation pairs of cold users and %d already "
                 "in training", inter_path, counts["duplicates_removed"], counts["cold_user_pairs_dropped"],
                 counts["seen_in_train_dropped"])
    info = {
        "source": str(folder),
        "format": "mmrec",
        "files": [inter_path.name, *(p.name for p in feature_paths.values())],
        "split": "explicit",
        **counts,
    }
    if has_ood:
        info["ood"] = "explicit"
    return InteractionData(
        name=inter_path.stem, n_users=n_users, n_items=n_items, train=train,
        val=evaluation["val"], test=evaluation["test"], features=features,
        ood_val=evaluation.get("ood_val"), ood_test=evaluation.get("ood_test"),
        train_timestamps=train_timestamps, info=info,
    )
