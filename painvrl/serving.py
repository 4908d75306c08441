"""Load a finished run folder for scoring and recommending: ``painvrl.load_run(DIR)``.

The model is rebuilt from DIR/config.yaml, DIR/checkpoint (state_dict + encoder spec) and DIR/mask.npy. Item
features, degree weights and the seen-item sets are NOT stored in the run folder: they are data, so the dataset
is re-loaded from the config (``dataset.*``, including its path). The dataset must therefore still be available
and unchanged; its fingerprint is compared with the one recorded in metrics.json and a mismatch is an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from painvrl.config import Config, load_config
from painvrl.data.dataset import InteractionData
from painvrl.errors import PainvrlInputError
from painvrl.evaluation.ranking import PositiveSets, topk_unseen
from painvrl.model.recommender import Recommender

logger = logging.getLogger(__name__)


def _ids(values: np.ndarray | list[int] | int, upper: int, what: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values))
    if array.ndim != 1:
        raise PainvrlInputError(f"{what}: expected a 1-d array of ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise PainvrlInputError(f"{what}: ids must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or array.max() >= upper):
        bad = array[(array < 0) | (array >= upper)]
        raise PainvrlInputError(f"{what}: id(s) {bad[:5].tolist()} outside [0, {upper})")
    return array


@dataclass
class LoadedRun:
    """A trained model plus the data it needs; ids are the dataset's dense 0-based ids."""

    config: Config
    model: Recommender
    data: InteractionData
    seen: PositiveSets
    """Items excluded by :meth:`recommend` (the training positives)."""
    metrics: dict[str, object]

    @property
    def n_users(self) -> int:
        return self.model.n_users

    @property
    def n_items(self) -> int:
        return self.model.n_items

    @torch.no_grad()
    def score(self, users: np.ndarray | list[int], items: np.ndarray | list[int]) -> np.ndarray:
        """float32 scores s(u_j, i_j) for equal-length arrays of user and item ids."""
        u = _ids(users, self.n_users, "score users")
        i = _ids(items, self.n_items, "score items")
        if u.shape != i.shape:
            raise PainvrlInputError(f"score: users ({u.shape[0]}) and items ({i.shape[0]}) differ in length")
        device = self.model.features.device
        scores = self.model.score_pairs(torch.from_numpy(u).to(device), torch.from_numpy(i).to(device))
        return scores.float().cpu().numpy()

    @torch.no_grad()
    def recommend(self, users: np.ndarray | list[int], k: int = 10, chunk_size: int = 1024) -> np.ndarray:
        """int64 [len(users), k]: each user's top-k items by score, never an item seen in training (rows are
        padded with -1 when a user has fewer than k unseen items)."""
        u = _ids(users, self.n_users, "recommend users")
        if not 1 <= k <= self.n_items:
            raise PainvrlInputError(f"recommend: k must be in [1, {self.n_items}], got {k}")
        return topk_unseen(self.model.ranking_scorer(), u, self.seen, k, chunk_size)


def load_run(path: str | Path, device: str = "cpu", data: InteractionData | None = None) -> LoadedRun:
    """Rebuild a run's final model. ``data`` skips re-loading the dataset (it must be the same data)."""
    from painvrl.runner import CHECKPOINT_DIR, CONFIG_FILE, MASK_FILE, METRICS_FILE
    from painvrl.training.checkpoint import load_model
    from painvrl.training.pipeline import final_encoder, new_model

    folder = Path(path).expanduser()
    for name in (CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR):
        if not (folder / name).exists():
            raise PainvrlInputError(f"run folder {folder}: {name} not found (is it a finished run?)")
    config = load_config(folder / CONFIG_FILE)
    metrics = json.loads((folder / METRICS_FILE).read_text())
    state, meta = load_model(folder / CHECKPOINT_DIR)
    mask = np.load(folder / MASK_FILE, allow_pickle=False) if (folder / MASK_FILE).exists() else None
    if data is None:
        from painvrl.data.registry import load_dataset

        data = load_dataset(config.dataset)
    recorded = metrics.get("provenance", {}).get("dataset", {}).get("fingerprint")
    if recorded is not None and recorded != data.fingerprint():
        raise PainvrlInputError(f"run folder {folder}: the dataset now loaded from the config has fingerprint "
                                f"{data.fingerprint()}, the run was trained on {recorded}")
    if meta.get("feature_dim") != data.feature_dim:
        raise PainvrlInputError(f"run folder {folder}: checkpoint expects {meta.get('feature_dim')} feature "
                                f"dims, the dataset has {data.feature_dim}")
    features = torch.from_numpy(data.feature_matrix())
    model = new_model(config, data, features, lambda: final_encoder(meta, config, data.feature_dim, mask), 0)
    model.load_state_dict(state)
    model.to(torch.device(device)).eval()
    seen = PositiveSets.from_pairs(data.train, data.n_users, data.n_items)
    return LoadedRun(config=config, model=model, data=data, seen=seen, metrics=metrics)
