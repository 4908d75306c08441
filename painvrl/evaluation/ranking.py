"""Full-ranking candidate generation: per-user positive sets and chunked top-K over all unseen items.

Two pieces live here:

- :class:`PositiveSets`, a CSR-like map user -> sorted unique item ids (training positives to exclude, or
  the val/test positives to score against);
- :func:`topk_unseen`, which scores users chunk by chunk through a caller-supplied function, masks the items a
  user has already seen and keeps only the top-K item ids, so memory stays bounded by ``chunk_size x n_items``
  whatever the number of users;

plus :func:`merge_topk_shards` for distributed evaluation (ranks rank disjoint user shards, the shards are
gathered and metrics are computed once on the merged lists, never averaged per rank).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

#: Score InvRL gives to seen (training) items in its legacy evaluation, instead of -inf.
LEGACY_SEEN_SCORE = 1e-5

#: Item id used to pad a top-K row when a user has fewer than K unseen items.
PAD_ITEM = -1

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PositiveSets:
    """Per-user sets of item ids in CSR layout.

    ``indices[indptr[u]:indptr[u + 1]]`` are the items of user ``u``, sorted ascending and unique.
    Build it with :meth:`from_pairs`; the constructor does not validate.
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_users: int
    n_items: int

    @classmethod
    def from_pairs(cls, pairs: np.ndarray, n_users: int, n_items: int) -> PositiveSets:
        """Build from ``pairs[N, 2]`` of (user, item) ids; duplicates are dropped and items sorted per user.

        Raises :class:`PainvrlInputError` when ``pairs`` is not an integer ``[N, 2]`` array or holds an id
        outside ``[0, n_users)`` / ``[0, n_items)``.
        """
        arr = np.asarray(pairs)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise PainvrlInputError(f"positive pairs: expected an array of shape [N, 2], got {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise PainvrlInputError(
                f"positive pairs: expected integer (user, item) ids, got dtype {arr.dtype}"
            )
        if n_users < 0 or n_items <= 0:
            raise PainvrlInputError(f"positive pairs: n_users={n_users} and n_items={n_items} must be > 0")
        users = arr[:, 0].astype(np.int64, copy=False)
        items = arr[:, 1].astype(np.int64, copy=False)
        if users.size:
            if users.min() < 0 or users.max() >= n_users:
                raise PainvrlInputError(
                    f"positive pairs: user ids must lie in [0, {n_users}), got range "
                    f"[{users.min()}, {users.max()}]"
                )
            if items.min() < 0 or items.max() >= n_items:
                raise PainvrlInputError(
                    f"positive pairs: item ids must lie in [0, {n_items}), got range "
                    f"[{items.min()}, {items.max()}]"
                )
        keys = np.unique(users * np.int64(n_items) + items)  # sorted by user, then item
        key_users = keys // n_items
        indices = keys - key_users * n_items
        counts = np.bincount(key_users, minlength=n_users).astype(np.int64)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(
            indptr=indptr, indices=indices.astype(np.int64), n_users=int(n_users), n_items=int(n_items)
        )

    @property
    def nnz(self) -> int:
        """Total number of (user, item) entries."""
        return int(self.indices.shape[0])

    def counts(self) -> np.ndarray:
        """Number of items per user, int64 ``[n_users]``."""
        return np.diff(self.indptr)

    def items_of(self, u: int) -> np.ndarray:
        """Sorted item ids of user ``u`` (a view; do not modify)."""
        return self.indices[self.indptr[u] : self.indptr[u + 1]]

    def users_with_items(self) -> np.ndarray:
        """Sorted ids of the users that have at least one item."""
        return np.flatnonzero(self.counts() > 0).astype(np.int64)

    def subset_users(self, users: np.ndarray) -> PositiveSets:
        """Keep only the rows of ``users``; the id space (``n_users``, ``n_items``) is unchanged."""
        keep = np.zeros(self.n_users, dtype=bool)
        ids = np.asarray(users, dtype=np.int64)
        keep[ids[(ids >= 0) & (ids < self.n_users)]] = True
        counts = np.where(keep, self.counts(), 0)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        row_of_entry = np.repeat(np.arange(self.n_users), self.counts())
        return PositiveSets(indptr, self.indices[keep[row_of_entry]], self.n_users, self.n_items)

    def to_pairs(self) -> np.ndarray:
        """The entries as an int64 ``[nnz, 2]`` array of (user, item), sorted."""
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), self.counts())
        return np.stack([users, self.indices], axis=1)

    def union(self, other: PositiveSets) -> PositiveSets:
        """Entry-wise union (e.g. train + validation positives to exclude when testing)."""
        if other.n_items != self.n_items:
            raise PainvrlInputError(f"positive sets: n_items differ ({self.n_items} vs {other.n_items})")
        pairs = np.concatenate([self.to_pairs(), other.to_pairs()])
        return PositiveSets.from_pairs(pairs, max(self.n_users, other.n_users), self.n_items)

    def keys(self) -> np.ndarray:
        """Sorted int64 keys ``user * n_items + item``, one per entry (for vectorised membership tests)."""
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), self.counts())
        return users * np.int64(self.n_items) + self.indices

    def rows_cols(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entries of ``users`` as (row position in ``users``, item id) arrays, without a Python loop."""
        users = np.asarray(users, dtype=np.int64)
        in_range = users < self.n_users  # users beyond this set's id space have no entries
        safe = np.where(in_range, users, 0)
        starts = self.indptr[safe]
        counts = np.where(in_range, self.indptr[safe + 1] - starts, 0)
        total = int(counts.sum())
        rows = np.repeat(np.arange(users.shape[0], dtype=np.int64), counts)
        first = np.cumsum(counts) - counts
        pos = np.arange(total, dtype=np.int64) - np.repeat(first - starts, counts)
        return rows, self.indices[pos]


def as_user_ids(users: np.ndarray, what: str) -> np.ndarray:
    """Validate a 1-D array of non-negative integer user ids and return it as int64."""
    arr = np.asarray(users)
    if arr.ndim != 1:
        raise PainvrlInputError(f"{what}: expected a 1-D array of user ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise PainvrlInputError(f"{what}: expected integer user ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise PainvrlInputError(f"{what}: user ids must be >= 0, got {arr.min()}")
    return arr


def topk_unseen(
    score_users: ScoreFn,
    users: np.ndarray,
    exclude: PositiveSets | None,
    k: int,
    chunk_size: int = 1024,
    *,
    legacy_seen_score: bool = False,
) -> np.ndarray:
    """Top-``k`` item ids per user over all items, excluding each user's seen items.

    ``score_users(user_ids)`` receives a CPU ``torch.long`` tensor of at most ``chunk_size`` user ids and must
    return a fresh ``[b, n_items]`` float tensor (on any device); it is modified in place (seen items are
    overwritten), so it must not be a view of a cached matrix. Scoring runs under ``torch.no_grad``.

    Seen items (``exclude``) get score ``-inf``; with ``legacy_seen_score=True`` they get ``1e-5`` instead,
    as in InvRL's evaluation (legacy, for comparison with published numbers only: seen items can then
    outrank unseen items with negative scores). Rows are sorted by decreasing score. Ties are broken the way
    ``torch.topk`` breaks them (deterministic for the same input on the same device, but unspecified by
    torch). When a user has fewer than ``k`` unseen items, the tail of its row is padded with ``-1`` (never a
    hit).

    Peak extra memory is one ``chunk_size x n_items`` score block plus the ``[len(users), k]`` result.
    Raises :class:`FloatingPointError` when a user's scores contain NaN.
    """
    users_arr = as_user_ids(users, "topk_unseen users")
    if k <= 0:
        raise PainvrlInputError(f"topk_unseen: k must be >= 1, got {k}")
    if chunk_size <= 0:
        raise PainvrlInputError(f"topk_unseen: chunk_size must be >= 1, got {chunk_size}")
    out = np.empty((users_arr.shape[0], k), dtype=np.int64)
    seen_value = LEGACY_SEEN_SCORE if legacy_seen_score else float("-inf")
    with torch.no_grad():
        for start in range(0, users_arr.shape[0], chunk_size):
            chunk = users_arr[start : start + chunk_size]
            scores = score_users(torch.tensor(chunk, dtype=torch.long))  # a copy: users may be read-only
            if scores.ndim != 2 or scores.shape[0] != chunk.shape[0]:
                raise PainvrlInputError(
                    f"topk_unseen: score_users returned shape {tuple(scores.shape)} "
                    f"for {chunk.shape[0]} users"
                )
            n_items = scores.shape[1]
            if k > n_items:
                raise PainvrlInputError(f"topk_unseen: k={k} exceeds the number of items {n_items}")
            if exclude is not None and exclude.nnz:
                if exclude.n_items != n_items:
                    raise PainvrlInputError(
                        f"topk_unseen: exclude has n_items={exclude.n_items}, scores have {n_items} columns"
                    )
                rows, cols = exclude.rows_cols(chunk)
                if rows.size:
                    idx_r = torch.from_numpy(rows).to(scores.device)
                    idx_c = torch.from_numpy(cols).to(scores.device)
                    scores.index_put_(
                        (idx_r, idx_c), torch.tensor(seen_value, dtype=scores.dtype, device=scores.device)
                    )
            values, index = torch.topk(scores, k, dim=1, largest=True, sorted=True)
            del scores
            if torch.isnan(values).any():  # topk ranks NaN above every number, so a NaN row shows up here
                bad = chunk[torch.isnan(values).any(dim=1).cpu().numpy()]
                raise FloatingPointError(f"topk_unseen: scores contain NaN for users {bad[:10].tolist()}")
            index = torch.where(torch.isneginf(values), torch.full_like(index, PAD_ITEM), index)
            out[start : start + chunk.shape[0]] = index.cpu().numpy()
    return out


def merge_topk_shards(shards: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-rank ``(users, topk)`` results into one pair sorted by user id.

    For distributed evaluation: each rank runs :func:`topk_unseen` on a disjoint user shard, the shards are
    gathered, merged here, and metrics are computed once on the result (never average per-rank metrics).
    Raises :class:`PainvrlInputError` when shards overlap, disagree on K or have mismatched lengths.
    """
    if not shards:
        raise PainvrlInputError("merge_topk_shards: no shards given")
    widths = {np.asarray(t).shape[1] if np.asarray(t).ndim == 2 else -1 for _, t in shards}
    if len(widths) != 1 or -1 in widths:
        raise PainvrlInputError(f"merge_topk_shards: shards must be 2-D with the same K, got widths {widths}")
    for i, (u, t) in enumerate(shards):
        if np.asarray(u).shape[0] != np.asarray(t).shape[0]:
            raise PainvrlInputError(
                f"merge_topk_shards: shard {i} has {np.asarray(u).shape[0]} users but "
                f"{np.asarray(t).shape[0]} top-K rows"
            )
    users = np.concatenate([as_user_ids(u, "merge_topk_shards users") for u, _ in shards])
    topk = np.concatenate([np.asarray(t, dtype=np.int64) for _, t in shards])
    order = np.argsort(users, kind="stable")
    users, topk = users[order], topk[order]
    if users.size > 1 and (np.diff(users) == 0).any():
        dup = users[1:][np.diff(users) == 0]
        raise PainvrlInputError(f"merge_topk_shards: user shards overlap, e.g. users {dup[:10].tolist()}")
    return users, topk
