"""Loader for MMGCN / GRCN-style datasets (Movielens, Tiktok, Kwai as distributed with those repositories).

Folder layout::

    train.npy            int [N, 2] (user, item + n_users): item ids are offset by the user count
    val_full.npy         object array of rows [user, item, item, ...] (offset item ids), one row per user
    test_full.npy        same for test
    user_item_dict.npy   optional: {user: set(offset items)} of training positives; only a consistency check
    features, either Movielens names (numpy)        or Tiktok/Kwai names (torch tensors, weights_only load)
        visual    FeatureVideo_normal.npy                feat_v.pt
        acoustic  FeatureAudio_avg_normal.npy            feat_a.pt
        textual   FeatureText_stl_normal.npy             feat_t.pt

The object arrays are read with :func:`painvrl.data.safeio.load_object_array_npy` (restricted unpickler).

``feat_t.pt`` may hold (item, word) index pairs instead of a dense matrix (GRCN's Tiktok): an integer tensor
of shape [K, 2] or [2, K] (a 2 x 2 tensor is read as [K, 2]) with 0-based item ids (not offset). It becomes a
bag-of-words term-frequency matrix [n_items, vocab] (``vocab = max word + 1``), each row divided by its word
count; items without words get a zero row and ``feature_present["textual"] = False``. The matrix is dense
float32; when ``n_items * vocab * 4`` bytes would exceed ``bow_max_bytes`` (default 2e9) the words are folded
into ``bow_max_bytes // (4 * n_items)`` columns by ``word % columns`` (feature hashing: colliding words
share a column), with a warning; ``info`` records ``textual_vocab`` and ``textual_columns``.

Sizes: ``n_items`` is the number of dense feature rows (equal in every dense file). The user count ``n_users``
is the item-id offset: user ids lie below it and offset item ids at or above it, so it lies in
``[max user + 1, min offset item]``, and ``max offset item < n_users + n_items`` adds the lower bound
``max offset item - n_items + 1`` (over train, val, test and user_item_dict). When those bounds pin one value
it is used; otherwise the smallest consistent value is taken (every user appears in some split, the usual
case for these filtered datasets) and a warning says the offset was ambiguous. Without dense features
``n_items = max offset item - n_users + 1`` (or more when the word pairs name later items).

Clean-up as in :func:`painvrl.data.cleaning.clean_splits` (counts in ``info``); ``info["split"] =
"explicit"``. The format has no OOD split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.config import DatasetConfig
from painvrl.data.cleaning import clean_splits, pair_keys, sorted_isin, unique_pair_index
from painvrl.data.dataset import InteractionData
from painvrl.data.safeio import as_feature_matrix, load_npy, load_object_array_npy, load_torch_tensor
from painvrl.errors import PainvrlInputError

log = logging.getLogger(__name__)

MOVIELENS_FEATURES = {"visual": "FeatureVideo_normal.npy", "acoustic": "FeatureAudio_avg_normal.npy",
                      "textual": "FeatureText_stl_normal.npy"}
TORCH_FEATURES = {"visual": "feat_v.pt", "acoustic": "feat_a.pt", "textual": "feat_t.pt"}
BOW_MAX_BYTES = 2_000_000_000


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise PainvrlInputError(f"{path}: required file not found (MMGCN format needs train.npy, "
                                "val_full.npy and test_full.npy)")
    return path


def _integer_ids(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.floor(array)).all():
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise PainvrlInputError(f"{path}: {what} must be integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise PainvrlInputError(f"{path}: {what} has negative id {int(array.min())}")
    return array


def read_train(path: Path) -> np.ndarray:
    """train.npy -> int64 [N, 2] (user, offset item)."""
    train = load_npy(path)
    if train.ndim != 2 or train.shape[1] != 2:
        raise PainvrlInputError(f"{path}: must be an [N, 2] array of (user, item) rows, got shape "
                                f"{train.shape}")
    if len(train) == 0:
        raise PainvrlInputError(f"{path}: the training split is empty")
    return _integer_ids(train, path, "train pairs")


def read_ranked_rows(path: Path) -> np.ndarray:
    """val_full.npy / test_full.npy (rows [user, item, item, ...]) -> int64 [N, 2] (user, offset item)."""
    rows: Any = load_object_array_npy(path)
    if rows.ndim == 0:  # np.save of a bare list of rows
        rows = rows.item()
    if isinstance(rows, np.ndarray) and rows.dtype.kind in "iuf" and rows.ndim == 2:
        rows = list(rows)  # equal-length rows saved as a plain 2-D array
    if not isinstance(rows, list | tuple | np.ndarray) or (isinstance(rows, np.ndarray) and rows.ndim != 1):
        raise PainvrlInputError(f"{path}: expected a list of rows [user, item, item, ...]")
    parts = []
    for index, row in enumerate(rows):
        row_array = np.asarray(row)
        if row_array.ndim != 1 or row_array.dtype.kind not in "iuf":
            raise PainvrlInputError(f"{path}: row {index} must be a flat list of integer ids [user, item, "
                                    f"...], got {type(row).__name__} {np.shape(row_array)}")
        parts.append(row_array)
    if not parts:
        raise PainvrlInputError(f"{path}: has no rows (split is empty)")
    lengths = np.array([len(p) for p in parts])
    if (lengths == 0).any():
        raise PainvrlInputError(f"{path}: row {int(np.flatnonzero(lengths == 0)[0])} is empty (needs a user)")
    flat = _integer_ids(np.concatenate(parts), path, "rows")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    users = np.repeat(flat[starts], lengths - 1)
    is_item = np.ones(len(flat), dtype=bool)
    is_item[starts] = False
    pairs = np.stack([users, flat[is_item]], axis=1)
    if len(pairs) == 0:
        raise PainvrlInputError(f"{path}: rows hold users but no items (split is empty)")
    return pairs


def read_user_item_dict(path: Path) -> np.ndarray:
    """user_item_dict.npy ({user: iterable of offset items}) -> int64 [N, 2] pairs."""
    loaded = load_object_array_npy(path)
    mapping = loaded.item() if loaded.ndim == 0 else None
    if not isinstance(mapping, dict):
        raise PainvrlInputError(f"{path}: expected np.save of a dict {{user: items}}, got "
                                f"{type(mapping if mapping is not None else loaded).__name__}")
    users, items = [], []
    for user, user_items in mapping.items():
        values = np.asarray(list(user_items) if isinstance(user_items, set | frozenset) else user_items)
        if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
            raise PainvrlInputError(f"{path}: items of user {user!r} must be a flat collection of integer "
                                    "ids")
        users.append(np.full(len(values), user))
        items.append(values)
    if not users:
        return np.empty((0, 2), dtype=np.int64)
    return _integer_ids(np.stack([np.concatenate(users), np.concatenate(items)], axis=1), path,
                        "user/item ids")


# ------------------------------------------------------------------------------------------------ features
def _feature_sources(folder: Path, wanted: list[str]) -> dict[str, Path]:
    sources: dict[str, Path] = {}
    for modality in MOVIELENS_FEATURES:
        numpy_file, torch_file = folder / MOVIELENS_FEATURES[modality], folder / TORCH_FEATURES[modality]
        if numpy_file.is_file() and torch_file.is_file():
            raise PainvrlInputError(f"{folder}: both {numpy_file.name} and {torch_file.name} exist for "
                                    f"modality '{modality}'; keep one")
        if numpy_file.is_file() or torch_file.is_file():
            sources[modality] = numpy_file if numpy_file.is_file() else torch_file
    if not sources:
        expected = ", ".join([*MOVIELENS_FEATURES.values(), *TORCH_FEATURES.values()])
        raise PainvrlInputError(f"{folder}: no item feature file (expected some of {expected})")
    if wanted:
        absent = [m for m in wanted if m not in sources]
        if absent:
            raise PainvrlInputError(f"{folder}: dataset.modalities asks for {absent}, but only "
                                    f"{sorted(sources)} have a feature file")
        sources = {m: sources[m] for m in wanted}
    return sources


def _word_pairs(tensor: np.ndarray) -> np.ndarray | None:
    """(item, word) index pairs [K, 2] when ``tensor`` is an integer [K, 2] / [2, K] array, else None."""
    if tensor.dtype.kind not in "iu" or tensor.ndim != 2 or 2 not in tensor.shape:
        return None
    return tensor if tensor.shape[1] == 2 else tensor.T


def bag_of_words(word_pairs: np.ndarray, n_items: int, path: Path,
                 max_bytes: int = BOW_MAX_BYTES) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(item, word) pairs -> (row-normalised TF matrix float32 [n_items, columns], present bool [n_items],
    info). Folds words modulo the column budget when the full vocabulary would exceed ``max_bytes``."""
    pairs = _integer_ids(np.ascontiguousarray(word_pairs), path, "(item, word) pairs")
    if len(pairs) == 0:
        raise PainvrlInputError(f"{path}: has no (item, word) pairs")
    if pairs[:, 0].max() >= n_items:
        raise PainvrlInputError(f"{path}: (item, word) pairs name item {int(pairs[:, 0].max())} but there "
                                f"are {n_items} items (item ids here are 0-based, not offset)")
    vocab = int(pairs[:, 1].max()) + 1
    columns = vocab
    if n_items * vocab * 4 > max_bytes:
        columns = max(1, max_bytes // (4 * n_items))
        log.warning("%s: vocabulary of %d words x %d items exceeds %d bytes dense; hashing words into %d "
                    "columns (word %% %d)", path, vocab, n_items, max_bytes, columns, columns)
    # O(K) memory besides the output: count distinct (item, column) cells, then scatter into the matrix.
    cells, counts = np.unique(pairs[:, 0] * np.int64(columns) + pairs[:, 1] % columns, return_counts=True)
    matrix = np.zeros((n_items, columns), dtype=np.float32)
    matrix.reshape(-1)[cells] = counts
    totals = matrix.sum(axis=1)
    present = totals > 0
    matrix[present] /= totals[present, None]
    return matrix, present, {"textual_vocab": vocab, "textual_columns": columns}


def _read_feature(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Returns (dense matrix, None) or (None, word pairs)."""
    import torch

    if path.suffix == ".npy":
        return as_feature_matrix(load_npy(path), path), None
    tensor = load_torch_tensor(path).detach().cpu()
    if tensor.is_sparse:
        tensor = tensor.to_dense()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # float16 / bfloat16 have no (or no lossless) numpy view
    array = tensor.numpy()
    if path.name == TORCH_FEATURES["textual"]:
        pairs = _word_pairs(array)
        if pairs is not None:
            return None, pairs
    return as_feature_matrix(array, path), None


# -------------------------------------------------------------------------------------------------- sizes
def infer_n_users(split_pairs: dict[str, np.ndarray], n_items: int | None, folder: Path) -> tuple[int, bool]:
    """The item-id offset (see module docstring). Returns (n_users, ambiguous)."""
    everything = np.concatenate(list(split_pairs.values()))
    max_user, min_item, max_item = int(everything[:, 0].max()), int(everything[:, 1].min()), int(
        everything[:, 1].max())
    low = max_user + 1
    if n_items is not None:
        low = max(low, max_item - n_items + 1)
    if low > min_item:
        users_at = next(name for name, p in split_pairs.items() if int(p[:, 0].max()) == max_user)
        items_at = next(name for name, p in split_pairs.items() if int(p[:, 1].min()) == min_item)
        detail = (f"user id {max_user} ({users_at}) is not below the smallest item id {min_item} ({items_at})"
                  if max_user + 1 > min_item else
                  f"item ids reach {max_item} but with {n_items} feature rows the offset would have to be at "
                  f"least {low}, above the smallest item id {min_item}")
        raise PainvrlInputError(f"{folder}: cannot separate users from offset item ids: {detail}; item ids "
                                "must be offset by the number of users")
    return low, low != min_item


def _to_item_index(pairs: np.ndarray, n_users: int, n_items: int, path: Path) -> np.ndarray:
    items = pairs[:, 1] - n_users
    if items.min() < 0 or items.max() >= n_items:
        bad = int(pairs[np.flatnonzero((items < 0) | (items >= n_items))[0], 1])
        raise PainvrlInputError(f"{path}: item id {bad} is outside the item range [{n_users}, "
                                f"{n_users + n_items}) (offset by n_users={n_users}, n_items={n_items})")
    return np.stack([pairs[:, 0], items], axis=1)


def _check_user_item_dict(train: np.ndarray, known: np.ndarray, path: Path, n_users: int,
                          n_items: int) -> int:
    """Every training pair must be in user_item_dict; returns the number of dict pairs not in train."""
    known = _to_item_index(known, n_users, n_items, path) if len(known) else known
    in_dict = sorted_isin(pair_keys(train, n_items), pair_keys(known, n_items))
    if not in_dict.all():
        user, item = (int(v) for v in train[np.flatnonzero(~in_dict)[0]])
        raise PainvrlInputError(f"{path}: does not match train.npy: {int((~in_dict).sum())} training pairs "
                                f"are missing from it (first: user {user}, item {item + n_users} offset); "
                                "are the files from the same dataset?")
    extra = len(unique_pair_index(known)) - len(unique_pair_index(train))
    if extra:
        log.warning("%s: holds %d pairs that are not in train.npy (ignored)", path, extra)
    return extra


def load_mmgcn(path: Path | str, cfg: DatasetConfig, *,
               bow_max_bytes: int = BOW_MAX_BYTES) -> InteractionData:
    """Load an MMGCN/GRCN-format folder into InteractionData (see the module docstring for the rules)."""
    folder = Path(path)
    if not folder.is_dir():
        raise PainvrlInputError(f"{folder}: dataset folder not found (dataset.path)")
    if cfg.ood == "explicit":
        raise PainvrlInputError(f"{folder}: dataset.ood is 'explicit' but the MMGCN format has no OOD split; "
                                "use temporal or popularity")
    paths = {name: _require(folder, f"{name}.npy") for name in ("train", "val_full", "test_full")}
    raw = {"train": read_train(paths["train"]), "val": read_ranked_rows(paths["val_full"]),
           "test": read_ranked_rows(paths["test_full"])}
    split_files = {"train": paths["train"], "val": paths["val_full"], "test": paths["test_full"]}
    dict_path = folder / "user_item_dict.npy"
    known = read_user_item_dict(dict_path) if dict_path.is_file() else None

    sources = _feature_sources(folder, list(cfg.modalities))
    dense: dict[str, np.ndarray] = {}
    word_pairs: tuple[str, np.ndarray] | None = None
    for modality, feature_path in sources.items():
        matrix, pairs = _read_feature(feature_path)
        if matrix is not None:
            dense[modality] = matrix
        elif pairs is not None:
            word_pairs = (modality, pairs)
    rows = {sources[m].name: f.shape[0] for m, f in dense.items()}
    if len(set(rows.values())) > 1:
        raise PainvrlInputError(f"{folder}: feature files disagree on the number of items (rows): {rows}")
    n_items_rows = next(iter(rows.values())) if rows else None

    id_sources = dict(raw) if known is None or len(known) == 0 else {**raw, "user_item_dict": known}
    n_users, ambiguous = infer_n_users(id_sources, n_items_rows, folder)
    if ambiguous:
        log.warning("%s: item-id offset is ambiguous (no split uses the first item); assuming n_users=%d, "
                    "the smallest consistent value", folder, n_users)
    if n_items_rows is not None:
        n_items = n_items_rows
    else:
        n_items = max(int(p[:, 1].max()) for p in id_sources.values()) - n_users + 1
        if word_pairs is not None:
            n_items = max(n_items, int(word_pairs[1][:, 0].max()) + 1)

    splits = {name: _to_item_index(pairs, n_users, n_items, split_files[name]) for name, pairs in raw.items()}
    info: dict[str, Any] = {"source": str(folder), "format": "mmgcn", "split": "explicit",
                            "variant": "movielens" if any(p.suffix == ".npy" for p in sources.values())
                            else "tiktok", "n_users_ambiguous": ambiguous,
                            "files": [p.name for p in (*split_files.values(), *sources.values())]}
    features: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for modality in sources:
        if modality in dense:
            features[modality] = dense[modality]
        elif word_pairs is not None:
            features[modality], present[modality], bow_info = bag_of_words(
                word_pairs[1], n_items, sources[modality], bow_max_bytes)
            info.update(bow_info)
    if known is not None:
        info["files"].append(dict_path.name)
        info["user_item_dict_extra_pairs"] = _check_user_item_dict(splits["train"], known, dict_path,
                                                                   n_users, n_items)

    train, evaluation, _, counts = clean_splits(splits["train"],
                                                {"val": splits["val"], "test": splits["test"]})
    for name, split in evaluation.items():
        if len(split) == 0:
            raise PainvrlInputError(f"{split_files[name]}: the {name} split is empty after dropping pairs of "
                                    "users without training rows and pairs already in training")
    info.update(counts)
    if counts["duplicates_removed"] or counts["cold_user_pairs_dropped"] or counts["seen_in_train_dropped"]:
        log.info("%s: removed %d duplicate pairs, dropped %d evaluation pairs of cold users and %d already "
                 "in training", folder, counts["duplicates_removed"], counts["cold_user_pairs_dropped"],
                 counts["seen_in_train_dropped"])
    return InteractionData(name=folder.name, n_users=n_users, n_items=n_items, train=train,
                           val=evaluation["val"], test=evaluation["test"], features=features,
                           feature_present=present, info=info)
