"""Write small, valid datasets in the MMRec and MMGCN/GRCN file formats (for tests of loaders and the CLI).

Interactions follow a little latent-factor model (users prefer items whose hidden factors match theirs, and the
features are noisy projections of those factors), so a recommender trained on them can beat random. Item 0 and
the last item always occur in training, so every size is pinned by the files alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

LATENT_DIM = 4


def _latent(rng: np.random.Generator, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(n_users, LATENT_DIM)), rng.normal(size=(n_items, LATENT_DIM))


def _pick_items(rng: np.random.Generator, users: np.ndarray, items: np.ndarray, per_user: int) -> np.ndarray:
    """int [n_users, per_user]: each user's distinct items, best-scoring (with Gumbel noise) first."""
    scores = users @ items.T + rng.gumbel(size=(len(users), len(items)))
    return np.argsort(-scores, axis=1)[:, :per_user]


def _features(rng: np.random.Generator, items: np.ndarray, dim: int) -> np.ndarray:
    mixing = rng.normal(size=(LATENT_DIM, dim))
    return (items @ mixing + 0.3 * rng.normal(size=(len(items), dim))).astype(np.float32)


def toy_splits(n_users: int, n_items: int, seed: int, with_ood: bool, per_user: int = 8,
               ) -> tuple[dict[str, list[tuple[int, int]]], np.ndarray]:
    """(split -> list of (user, item)) with train/val/test (+ ood_val/ood_test) and the item latent factors."""
    n_eval = 4 if with_ood else 2
    if per_user < n_eval + 2 or per_user > n_items:
        raise ValueError(f"per_user={per_user} must be in [{n_eval + 2}, n_items={n_items}]")
    rng = np.random.default_rng(seed)
    users, items = _latent(rng, n_users, n_items)
    picks = _pick_items(rng, users, items, per_user)
    names = ["val", "test", "ood_val", "ood_test"][:n_eval]
    splits: dict[str, list[tuple[int, int]]] = {name: [] for name in ["train", *names]}
    for user in range(n_users):
        order = rng.permutation(picks[user])
        for position, name in enumerate(names):
            splits[name].append((user, int(order[position])))
        splits["train"].extend((user, int(item)) for item in order[n_eval:])
    evaluation = {(u, i) for name in names for u, i in splits[name]}
    for item in (0, n_items - 1):  # pin n_items / the id offset
        if all(i != item for _, i in splits["train"]):
            user = next(u for u in range(n_users) if (u, item) not in evaluation)
            splits["train"].append((user, item))
    return splits, items


def write_mmrec(folder: Path | str, n_users: int = 40, n_items: int = 60, with_ood: bool = True, seed: int = 0,
                *, name: str = "toy", modality_dims: dict[str, int] | None = None, extra_feature_rows: int = 0,
                per_user: int = 8) -> Path:
    """Write ``folder/<name>.inter`` and ``folder/<modality>_feat.npy`` (default image 8-d, text 6-d).

    x_label: 0 train, 1 one valid item per user, 2 one test item per user, and with ``with_ood`` 3 / 4 one OOD
    valid / test item per user. ``extra_feature_rows`` appends feature rows for items without interactions.
    Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits, items = toy_splits(n_users, n_items, seed, with_ood, per_user)
    rng = np.random.default_rng(seed + 1)
    labels = {"train": 0, "val": 1, "test": 2, "ood_val": 3, "ood_test": 4}
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    timestamp = 1_000_000
    for split, pairs in splits.items():
        for user, item in pairs:
            timestamp += int(rng.integers(1, 100))
            lines.append(f"{user}\t{item}\t{int(rng.integers(3, 6))}\t{timestamp}\t{labels[split]}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    if extra_feature_rows:
        items = np.concatenate([items, rng.normal(size=(extra_feature_rows, LATENT_DIM))])
    for modality, dim in (modality_dims or {"image": 8, "text": 6}).items():
        np.save(folder / f"{modality}_feat.npy", _features(rng, items, dim))
    return folder


def object_rows(rows: list[list[int]]) -> np.ndarray:
    """1-D object array of ragged int rows, as MMGCN's val_full.npy / test_full.npy hold."""
    array = np.empty(len(rows), dtype=object)
    for index, row in enumerate(rows):
        array[index] = list(row)
    return array


def write_mmgcn(folder: Path | str, variant: Literal["movielens", "tiktok"] = "movielens", n_users: int = 40,
                n_items: int = 60, seed: int = 0, *, with_user_item_dict: bool = True,
                text_as_words: bool = True, words_layout: Literal["k2", "2k"] = "k2", vocab: int = 30,
                per_user: int = 8) -> Path:
    """Write an MMGCN/GRCN folder: train.npy, val_full.npy, test_full.npy, user_item_dict.npy and features.

    Item ids in the split files are offset by ``n_users``. ``variant="movielens"``: FeatureVideo_normal.npy
    (10-d), FeatureAudio_avg_normal.npy (6-d), FeatureText_stl_normal.npy (8-d). ``variant="tiktok"``:
    feat_v.pt, feat_a.pt (float tensors) and feat_t.pt: with ``text_as_words`` (item, word) int64 pairs laid out
    [K, 2] (``words_layout="k2"``) or [2, K] (``"2k"``), 3-5 words per item with the last item wordless, else
    an 8-d float tensor. Each user has one or two val and one test items. Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits, items = toy_splits(n_users, n_items, seed, with_ood=True, per_user=per_user)
    rng = np.random.default_rng(seed + 1)
    # ood_val becomes a second validation item for every other user (ragged rows, as in the real files)
    val_rows: dict[int, list[int]] = {u: [u] for u in range(n_users)}
    for user, item in splits["val"] + [p for p in splits["ood_val"] if p[0] % 2 == 0]:
        val_rows[user].append(item + n_users)
    test_rows = {u: [u, i + n_users] for u, i in splits["test"]}
    train = np.array(splits["train"], dtype=np.int64)
    train[:, 1] += n_users
    np.save(folder / "train.npy", train)
    np.save(folder / "val_full.npy", object_rows(list(val_rows.values())), allow_pickle=True)
    np.save(folder / "test_full.npy", object_rows(list(test_rows.values())), allow_pickle=True)
    if with_user_item_dict:
        user_items: dict[int, set[int]] = {}
        for user, item in train.tolist():
            user_items.setdefault(user, set()).add(item)
        np.save(folder / "user_item_dict.npy", np.array(user_items, dtype=object), allow_pickle=True)
    visual, acoustic = _features(rng, items, 10), _features(rng, items, 6)
    if variant == "movielens":
        np.save(folder / "FeatureVideo_normal.npy", visual)
        np.save(folder / "FeatureAudio_avg_normal.npy", acoustic)
        np.save(folder / "FeatureText_stl_normal.npy", _features(rng, items, 8))
    elif variant == "tiktok":
        import torch

        torch.save(torch.from_numpy(visual), folder / "feat_v.pt")
        torch.save(torch.from_numpy(acoustic), folder / "feat_a.pt")
        if text_as_words:
            words = word_pairs(rng, n_items, vocab)
            torch.save(torch.from_numpy(words if words_layout == "k2" else words.T.copy()), folder / "feat_t.pt")
        else:
            torch.save(torch.from_numpy(_features(rng, items, 8)), folder / "feat_t.pt")
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return folder


def word_pairs(rng: np.random.Generator, n_items: int, vocab: int) -> np.ndarray:
    """int64 [K, 2] (item, word): 3-5 words per item (a word may repeat), none for the last item."""
    rows = []
    for item in range(n_items - 1):
        for word in rng.integers(0, vocab, size=int(rng.integers(3, 6))):
            rows.append((item, int(word)))
    rows.append((0, vocab - 1))  # pin the vocabulary size
    return np.array(rows, dtype=np.int64)
