"""Dataset registry: ``dataset.name`` -> loader, path checks, and generic OOD builders.

Loaders are imported lazily (an explicit dict, no globals() lookups), so ``import painvrl`` stays light.

Who builds which split:
- ``synthetic`` builds its own IID and OOD splits (``dataset.ood=synthetic`` is its shifted environment).
- ``movielens`` builds its splits from ``dataset.split`` (random | temporal) and ``dataset.ood``
  (none | temporal | popularity) itself, since it knows every interaction's timestamp.
- ``mmrec`` / ``mmgcn`` keep the IID split stored in their files. For ``dataset.ood=popularity`` this module
  moves a popularity-flattened sample of all their positives into OOD splits
  (:func:`apply_popularity_ood`); ``dataset.ood=temporal`` needs every interaction's timestamp, which these
  loaders do not expose, and is refused with a clear error.

``data.info["dataset"]`` / ``["split_source"]`` / ``["ood_source"]`` record what was done.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.config import DatasetConfig
from painvrl.data.dataset import InteractionData
from painvrl.data.shifts import known_user_mask, popularity_ood, split_ood
from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

LOADERS: dict[str, tuple[str, str]] = {
    "synthetic": ("painvrl.data.synthetic", "make_synthetic"),
    "mmrec": ("painvrl.data.mmrec", "load_mmrec"),
    "mmgcn": ("painvrl.data.mmgcn", "load_mmgcn"),
    "movielens": ("painvrl.data.movielens", "load_movielens"),
}
"""dataset.name -> (module, function). Path loaders take (path, cfg); synthetic takes (cfg)."""

PATH_DATASETS = ("mmrec", "mmgcn", "movielens")
SELF_SPLITTING = ("synthetic", "movielens")
"""Loaders that apply dataset.split / dataset.ood themselves."""

DATA_ENV = "PAINVRL_DATA"
MOVIELENS_FOLDER = "ml-latest-small"


def default_data_root() -> Path:
    """$PAINVRL_DATA, else ~/.cache/painvrl/data."""
    root = os.environ.get(DATA_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "painvrl" / "data"


def resolve_path(cfg: DatasetConfig) -> Path | None:
    """The dataset folder: dataset.path, or for movielens the default $PAINVRL_DATA/ml-latest-small.
    Raises PainvrlInputError naming dataset.path when the folder is required and absent."""
    if cfg.name not in PATH_DATASETS:
        return None
    if cfg.path is None:
        if cfg.name != "movielens":
            raise PainvrlInputError(f"config field 'dataset.path': required for dataset.name={cfg.name}")
        folder = default_data_root() / MOVIELENS_FOLDER
        if not folder.is_dir():
            raise PainvrlInputError(
                f"config field 'dataset.path': not set, and the default MovieLens folder {folder} does not "
                f"exist. Set dataset.path to a folder in the GroupLens layout (ratings.csv, movies.csv, "
                f"tags.csv), set ${DATA_ENV}, or download it once with "
                f"`python -c \"from pathlib import Path; from painvrl.data.movielens import download_movielens; "
                f"download_movielens(Path('{folder}'))\"`")
        return folder
    folder = Path(cfg.path).expanduser()
    if not folder.exists():
        raise PainvrlInputError(f"config field 'dataset.path': {folder} does not exist")
    if not folder.is_dir():
        raise PainvrlInputError(f"config field 'dataset.path': {folder} is not a folder")
    return folder


def _loader(name: str) -> Callable[..., InteractionData]:
    if name not in LOADERS:
        raise PainvrlInputError(f"config field 'dataset.name': {name!r} is not one of {sorted(LOADERS)}")
    module, function = LOADERS[name]
    loader: Callable[..., InteractionData] = getattr(importlib.import_module(module), function)
    return loader


def apply_popularity_ood(data: InteractionData, ood_fraction: float, seed: int) -> InteractionData:
    """Move a popularity-flattened sample (:func:`painvrl.data.shifts.popularity_ood`) of all positives out
    of their stored split into ood_val / ood_test. The remaining pairs keep their stored split; val/test
    pairs of users left without a training positive are dropped (counted)."""
    splits = {"train": data.train, "val": data.val, "test": data.test}
    origin = np.concatenate([np.full(len(p), i) for i, p in enumerate(splits.values())])
    pooled = np.concatenate(list(splits.values()))
    shift = popularity_ood(pooled, data.n_items, ood_fraction, seed)
    keep = np.ones(len(pooled), dtype=bool)
    keep[shift.ood_index] = False
    train = pooled[keep & (origin == 0)]
    train_timestamps = None
    if data.train_timestamps is not None:
        train_timestamps = np.asarray(data.train_timestamps)[keep[origin == 0]]
    remaining: dict[str, np.ndarray] = {}
    dropped = 0
    for i, name in ((1, "val"), (2, "test")):
        pairs = pooled[keep & (origin == i)]
        known = known_user_mask(train, pairs)
        remaining[name], dropped = pairs[known], dropped + int((~known).sum())
    halves = split_ood(shift.ood, train, seed)
    info = {**data.info, **shift.info, **halves.info, "ood_source": "registry:popularity",
            "dropped_eval_unknown_user_after_ood": dropped,
            "ood_taken_from": {name: int((~keep & (origin == i)).sum()) for i, name in enumerate(splits)}}
    return dataclasses.replace(data, train=train, val=remaining["val"], test=remaining["test"],
                               ood_val=halves.ood_val, ood_test=halves.ood_test, ood_candidates=None,
                               train_timestamps=train_timestamps, info=info)


def _apply_ood(data: InteractionData, cfg: DatasetConfig) -> InteractionData:
    if cfg.name in SELF_SPLITTING:
        return data
    if cfg.ood in ("explicit", "synthetic"):
        if not data.has_ood():
            raise PainvrlInputError(f"config field 'dataset.ood': {cfg.ood!r} but dataset {cfg.name} has no OOD "
                                    "split of its own; use temporal or popularity")
        return data
    if cfg.ood == "none":
        return data
    if data.has_ood():
        raise PainvrlInputError(f"config field 'dataset.ood': {cfg.ood!r} asks for a built OOD split, but "
                                f"dataset {cfg.name} already has its own OOD rows; set dataset.ood=explicit")
    if cfg.ood == "temporal":
        raise PainvrlInputError(f"config field 'dataset.ood': temporal needs the timestamp of every "
                                f"interaction, which the {cfg.name} loader does not provide; use popularity or "
                                "store OOD rows in the files")
    return apply_popularity_ood(data, cfg.ood_fraction, cfg.seed)


def load_dataset(cfg: DatasetConfig) -> InteractionData:
    """Load the dataset ``cfg.name`` describes, with the splits the config asks for."""
    loader = _loader(cfg.name)
    folder = resolve_path(cfg)
    data = loader(cfg) if folder is None else loader(folder, cfg)
    data = _apply_ood(data, cfg)
    ood_source = data.info.get("ood_source") or data.info.get("ood_builder") or data.info.get("ood")
    provenance: dict[str, Any] = {
        "dataset": cfg.name,
        "split_source": data.info.get("split_builder") or data.info.get("split") or cfg.split,
        "ood_source": (ood_source or "unnamed") if data.has_ood() else "none",
    }
    if folder is not None:
        provenance["path"] = str(folder)
    if cfg.name not in SELF_SPLITTING and cfg.split != "explicit":
        logger.info("dataset.split=%s ignored for %s: its files carry the IID split", cfg.split, cfg.name)
    data.info.update(provenance)
    logger.info("dataset %s: %s", cfg.name, {k: v for k, v in data.summary().items() if k != "modalities"})
    return data
