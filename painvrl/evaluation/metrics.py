"""Full-ranking metrics (Recall, Precision, NDCG, HitRate @K), overall and per environment.

Standard definitions, for a user with positive set P (|P| >= 1) and top-K list L:

- recall@K = |L ∩ P| / |P|, precision@K = |L ∩ P| / K, hit@K = 1 if |L ∩ P| > 0 else 0;
- ndcg@K = DCG / IDCG with DCG = sum over hit ranks r (0-based) of 1 / log2(r + 2) and IDCG the DCG of an
  ideal list with min(|P|, K) hits at the top.

Each metric is the mean over the evaluated users (those with at least one positive); ``n_users`` is their
count. Everything is vectorised over users (one ``searchsorted`` membership test for the whole top-K matrix).

``legacy_invrl=True`` reproduces InvRL's evaluation (github nickwzk/InvRL, ``Model.full_accuracy``), legacy,
for comparison with published numbers only: IDCG over the number of HITS (so any user with one hit at rank 0
scores ndcg 1 whatever |P|), and seen items scored 1e-5 rather than -inf when ranking (see
:func:`painvrl.evaluation.ranking.topk_unseen`). Do not select models on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from painvrl.errors import PainvrlInputError
from painvrl.evaluation.ranking import PositiveSets, ScoreFn, as_user_ids, merge_topk_shards, topk_unseen

logger = logging.getLogger(__name__)

METRIC_NAMES = ("recall", "precision", "ndcg", "hit")
N_USERS_KEY = "n_users"


def _check_ks(ks: Sequence[int], max_k: int | None = None) -> list[int]:
    out = [int(k) for k in ks]
    if not out:
        raise PainvrlInputError("metrics: ks must name at least one cutoff K")
    for k in out:
        if k < 1:
            raise PainvrlInputError(f"metrics: every K must be >= 1, got {k}")
        if max_k is not None and k > max_k:
            raise PainvrlInputError(f"metrics: K={k} exceeds the top-K list length {max_k}")
    return out


def hit_matrix(topk: np.ndarray, users: np.ndarray, positives: PositiveSets) -> np.ndarray:
    """Boolean ``[U, K]``: whether ``topk[j, r]`` is a positive of ``users[j]`` (padding ``-1`` never is)."""
    n_items = positives.n_items
    if topk.size and topk.max() >= n_items:
        raise PainvrlInputError(f"metrics: top-K item id {topk.max()} is >= n_items={n_items}")
    keys = positives.keys()
    if keys.size == 0:
        return np.zeros(topk.shape, dtype=bool)
    query = users[:, None] * np.int64(n_items) + topk
    pos = np.minimum(np.searchsorted(keys, query), keys.shape[0] - 1)
    return (topk >= 0) & (keys[pos] == query)


def metrics_from_topk(
    topk: np.ndarray,
    users: np.ndarray,
    positives: PositiveSets,
    ks: Sequence[int],
    legacy_invrl: bool = False,
) -> dict[str, float]:
    """Mean recall/precision/ndcg/hit @K over the ``users`` that have at least one positive.

    ``topk[j]`` is the ranked list of ``users[j]`` (as returned by ``topk_unseen``); users must be unique.
    Keys are ``"recall@K"``, ``"precision@K"``, ``"ndcg@K"``, ``"hit@K"`` for each K, plus ``"n_users"``.
    ``legacy_invrl`` switches NDCG to InvRL's legacy IDCG (over the hits; see the module docstring).
    Raises :class:`PainvrlInputError` when no given user has a positive.
    """
    users_arr = as_user_ids(users, "metrics users")
    topk_arr = np.asarray(topk)
    if topk_arr.ndim != 2 or topk_arr.shape[0] != users_arr.shape[0]:
        raise PainvrlInputError(
            f"metrics: top-K must be [len(users), K] = [{users_arr.shape[0]}, K], got {topk_arr.shape}"
        )
    ks_list = _check_ks(ks, topk_arr.shape[1])
    if users_arr.size > 1 and np.unique(users_arr).shape[0] != users_arr.shape[0]:
        raise PainvrlInputError("metrics: users must be unique (one top-K row per user)")
    counts = positives.counts()
    in_range = users_arr < positives.n_users
    n_pos = np.where(in_range, counts[np.where(in_range, users_arr, 0)], 0)
    evaluated = n_pos > 0
    n_eval = int(evaluated.sum())
    if n_eval == 0:
        raise PainvrlInputError("metrics: none of the given users has a positive item")
    max_k = max(ks_list)
    hits = hit_matrix(topk_arr[evaluated, :max_k].astype(np.int64), users_arr[evaluated], positives)
    n_pos = n_pos[evaluated].astype(np.float64)
    discount = 1.0 / np.log2(np.arange(max_k, dtype=np.float64) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[n] = DCG of n hits at the top

    out: dict[str, float] = {}
    for k in ks_list:
        hk = hits[:, :k]
        n_hit = hk.sum(axis=1)
        dcg = hk @ discount[:k]
        if legacy_invrl:
            idcg = ideal[np.minimum(n_hit, k)]
            ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
        else:
            ndcg = dcg / ideal[np.minimum(n_pos, k).astype(np.int64)]
        out[f"recall@{k}"] = float(np.mean(n_hit / n_pos))
        out[f"precision@{k}"] = float(np.mean(n_hit / k))
        out[f"ndcg@{k}"] = float(np.mean(ndcg))
        out[f"hit@{k}"] = float(np.mean(n_hit > 0))
    out[N_USERS_KEY] = n_eval
    return out


@dataclass
class SplitMetrics:
    """Metrics of one split (e.g. test): overall, per environment, worst environment and spread.

    ``worst_env[key]`` is the minimum of ``envs[e][key]`` over environments and ``spread[key]`` the max minus
    the min; both cover the metric keys only (not ``n_users``) and are empty when no environment labels were
    given.
    """

    overall: dict[str, float]
    envs: dict[str, dict[str, float]] = field(default_factory=dict)
    worst_env: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly ``{"metrics", "envs", "worst_env", "spread"}``."""

        def clean(d: dict[str, float]) -> dict[str, float]:
            return {k: (int(v) if k == N_USERS_KEY else float(v)) for k, v in d.items()}

        return {
            "metrics": clean(self.overall),
            "envs": {e: clean(m) for e, m in self.envs.items()},
            "worst_env": clean(self.worst_env),
            "spread": clean(self.spread),
        }


def _env_summary(envs: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    if not envs:
        return {}, {}
    keys = [k for k in next(iter(envs.values())) if k != N_USERS_KEY]
    worst: dict[str, float] = {}
    spread: dict[str, float] = {}
    for key in keys:
        values = [m[key] for m in envs.values()]
        worst[key] = float(min(values))
        spread[key] = float(max(values) - min(values))
    return worst, spread


def split_metrics_from_topk(
    users: np.ndarray,
    topk: np.ndarray,
    positives_pairs: np.ndarray,
    n_items: int,
    ks: Sequence[int],
    env_labels: np.ndarray | None = None,
    legacy_invrl: bool = False,
) -> SplitMetrics:
    """:class:`SplitMetrics` from precomputed top-K lists (e.g. gathered with ``merge_topk_shards``).

    Every user with a positive in ``positives_pairs`` must have a row in ``(users, topk)``. With
    ``env_labels[N]`` (one label per positive pair), environment ``e`` is evaluated on each user's positives
    labelled ``e``, using the same top-K row; users without positives in ``e`` are skipped for that ``e``.
    """
    pairs = np.asarray(positives_pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise PainvrlInputError(
            f"metrics: positive pairs must be a non-empty [N, 2] array, got {pairs.shape}"
        )
    users_arr = as_user_ids(users, "metrics users")
    n_users = int(max(pairs[:, 0].max() + 1, users_arr.max() + 1 if users_arr.size else 0))
    positives = PositiveSets.from_pairs(pairs, n_users, n_items)
    missing = np.setdiff1d(positives.users_with_items(), users_arr)
    if missing.size:
        raise PainvrlInputError(
            f"metrics: {missing.size} users with positives have no top-K row, e.g. {missing[:10].tolist()}"
        )
    overall = metrics_from_topk(topk, users_arr, positives, ks, legacy_invrl)
    envs: dict[str, dict[str, float]] = {}
    if env_labels is not None:
        labels = np.asarray(env_labels)
        if labels.shape != (pairs.shape[0],):
            raise PainvrlInputError(
                f"metrics: env_labels must have one label per positive pair ({pairs.shape[0]}), "
                f"got shape {labels.shape}"
            )
        for label in np.unique(labels):
            env_pos = PositiveSets.from_pairs(pairs[labels == label], n_users, n_items)
            envs[str(label)] = metrics_from_topk(topk, users_arr, env_pos, ks, legacy_invrl)
    worst, spread = _env_summary(envs)
    return SplitMetrics(overall=overall, envs=envs, worst_env=worst, spread=spread)


def evaluate_positives(
    score_users: ScoreFn,
    n_items: int,
    positives_pairs: np.ndarray,
    exclude: PositiveSets | None,
    ks: Sequence[int],
    chunk_size: int = 1024,
    env_labels: np.ndarray | None = None,
    legacy_invrl: bool = False,
) -> SplitMetrics:
    """Full-ranking evaluation of one split: rank once, then overall and per-environment metrics.

    Ranks all items for every user with a positive in ``positives_pairs[N, 2]`` (one ``topk_unseen`` pass with
    K = max(ks), seen items in ``exclude`` removed), then derives overall metrics and, with ``env_labels[N]``,
    per-environment metrics, worst environment and spread from those same lists.
    ``legacy_invrl=True``: InvRL's legacy scoring of seen items (1e-5) and IDCG (over hits), for comparison
    with published numbers only.
    """
    pairs = np.asarray(positives_pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise PainvrlInputError(
            f"evaluate: positive pairs must be a non-empty [N, 2] array, got {pairs.shape}"
        )
    ks_list = _check_ks(ks, n_items)
    n_users = int(pairs[:, 0].max()) + 1
    if exclude is not None:
        n_users = max(n_users, exclude.n_users)
    users = PositiveSets.from_pairs(pairs, n_users, n_items).users_with_items()
    topk = topk_unseen(score_users, users, exclude, max(ks_list), chunk_size, legacy_seen_score=legacy_invrl)
    logger.debug("evaluate: ranked %d users over %d items (K=%d)", users.shape[0], n_items, max(ks_list))
    return split_metrics_from_topk(users, topk, pairs, n_items, ks_list, env_labels, legacy_invrl)


def evaluate_positives_sharded(
    score_users: ScoreFn,
    n_items: int,
    positives_pairs: np.ndarray,
    exclude: PositiveSets | None,
    ks: Sequence[int],
    rank: int,
    world_size: int,
    gather: Callable[[object], list[object]],
    chunk_size: int = 1024,
    env_labels: np.ndarray | None = None,
    legacy_invrl: bool = False,
) -> SplitMetrics:
    """evaluate_positives with the ranking split over ranks: each rank ranks a disjoint, contiguous shard of
    the users, ``gather`` (an all-gather of Python objects) collects every shard's top-K lists, and metrics are
    computed once from the union, identical on every rank and to the single-process result (never an average
    of per-rank metrics)."""
    if world_size == 1:
        return evaluate_positives(score_users, n_items, positives_pairs, exclude, ks, chunk_size, env_labels,
                                  legacy_invrl)
    pairs = np.asarray(positives_pairs)
    ks_list = _check_ks(ks, n_items)
    n_users = int(pairs[:, 0].max()) + 1
    if exclude is not None:
        n_users = max(n_users, exclude.n_users)
    users = PositiveSets.from_pairs(pairs, n_users, n_items).users_with_items()
    shard = np.array_split(users, world_size)[rank]
    topk = topk_unseen(score_users, shard, exclude, max(ks_list), chunk_size, legacy_seen_score=legacy_invrl) \
        if len(shard) else np.zeros((0, max(ks_list)), dtype=np.int64)
    shards = cast(list[tuple[np.ndarray, np.ndarray]], gather((shard, topk)))
    all_users, all_topk = merge_topk_shards([s for s in shards if len(s[0])])
    return split_metrics_from_topk(all_users, all_topk, pairs, n_items, ks_list, env_labels, legacy_invrl)
