"""Tests for painvrl.evaluation: positive sets, top-K over unseen items, metrics, per-env, sharding."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from painvrl.errors import PainvrlInputError
from painvrl.evaluation import (
    PositiveSets,
    SplitMetrics,
    evaluate_positives,
    merge_topk_shards,
    metrics_from_topk,
    split_metrics_from_topk,
    topk_unseen,
)

L3 = 1.0 / math.log2(3.0)  # discount of rank 1 (0-based)
L4 = 1.0 / math.log2(4.0)


def matrix_scorer(
    scores: torch.Tensor, calls: list[int] | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """score_users over a fixed [n_users, n_items] matrix; fresh copies (topk_unseen edits in place)."""

    def score(users: torch.Tensor) -> torch.Tensor:
        assert users.dtype == torch.long
        if calls is not None:
            calls.append(int(users.shape[0]))
        return scores[users].clone()

    return score


# Hand case: 2 users, 5 items.
#   user 0 scores, item 1 seen  -> ranking [2, 0, 4, 3]; positives {0, 3}
#   user 1 scores, items 2, 4 seen -> ranking [1, 3, 0]; positives {1}
HAND_SCORES = torch.tensor(
    [
        [0.5, 0.9, 0.8, 0.1, 0.3],
        [0.2, 0.7, 0.9, 0.6, 0.95],
    ]
)
HAND_SEEN = np.array([[0, 1], [1, 2], [1, 4]])
HAND_POS = np.array([[0, 0], [0, 3], [1, 1]])


def hand_sets() -> tuple[PositiveSets, PositiveSets]:
    return PositiveSets.from_pairs(HAND_SEEN, 2, 5), PositiveSets.from_pairs(HAND_POS, 2, 5)


# --------------------------------------------------------------------------------------------- PositiveSets


def test_positive_sets_dedup_sort_and_accessors() -> None:
    pairs = np.array([[2, 4], [0, 3], [2, 1], [0, 3], [2, 4], [0, 0]])
    ps = PositiveSets.from_pairs(pairs, n_users=4, n_items=5)
    assert ps.indptr.tolist() == [0, 2, 2, 4, 4]
    assert ps.items_of(0).tolist() == [0, 3]
    assert ps.items_of(1).tolist() == []
    assert ps.items_of(2).tolist() == [1, 4]
    assert ps.users_with_items().tolist() == [0, 2]
    assert ps.indptr.dtype == np.int64 and ps.indices.dtype == np.int64
    sub = ps.subset_users(np.array([2, 3]))
    assert sub.n_users == 4 and sub.items_of(0).tolist() == [] and sub.items_of(2).tolist() == [1, 4]
    assert sub.users_with_items().tolist() == [2]
    rows, cols = ps.rows_cols(np.array([2, 1, 0, 7]))
    assert rows.tolist() == [0, 0, 2, 2] and cols.tolist() == [1, 4, 0, 3]
    both = ps.union(PositiveSets.from_pairs(np.array([[1, 2], [0, 3]]), 2, 5))
    assert both.to_pairs().tolist() == [[0, 0], [0, 3], [1, 2], [2, 1], [2, 4]]


@pytest.mark.parametrize(
    "pairs",
    [
        np.array([[0, 5]]),
        np.array([[-1, 0]]),
        np.array([[3, 0]]),
        np.array([0, 1, 2]),
        np.array([[0.0, 1.0]]),
    ],
)
def test_positive_sets_rejects_bad_pairs(pairs: np.ndarray) -> None:
    with pytest.raises(PainvrlInputError):
        PositiveSets.from_pairs(pairs, n_users=3, n_items=5)


# --------------------------------------------------------------------------------------------- topk_unseen


def test_topk_excludes_seen_items() -> None:
    seen, _ = hand_sets()
    top = topk_unseen(matrix_scorer(HAND_SCORES), np.array([0, 1]), seen, k=3)
    assert top.tolist() == [[2, 0, 4], [1, 3, 0]]
    no_excl = topk_unseen(matrix_scorer(HAND_SCORES), np.array([0, 1]), None, k=3)
    assert no_excl.tolist() == [[1, 2, 0], [4, 2, 1]]


def test_topk_pads_when_fewer_unseen_than_k() -> None:
    seen, _ = hand_sets()
    top = topk_unseen(matrix_scorer(HAND_SCORES), np.array([1]), seen, k=5)
    assert top.tolist() == [[1, 3, 0, -1, -1]]


def test_topk_legacy_seen_score_outranks_negative_scores() -> None:
    scores = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0]])
    seen = PositiveSets.from_pairs(np.array([[0, 0]]), 1, 5)
    assert topk_unseen(matrix_scorer(scores), np.array([0]), seen, 2).tolist() == [[1, 2]]
    legacy = topk_unseen(matrix_scorer(scores), np.array([0]), seen, 2, legacy_seen_score=True)
    assert legacy.tolist() == [[0, 1]]


def test_topk_chunk_size_invariance_and_bounded_chunks() -> None:
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.normal(size=(53, 40)).astype(np.float32))
    seen = PositiveSets.from_pairs(np.stack([rng.integers(0, 53, 300), rng.integers(0, 40, 300)], 1), 53, 40)
    users = rng.permutation(53)
    outs = []
    for chunk in (1, 7, 1000):
        calls: list[int] = []
        outs.append(topk_unseen(matrix_scorer(scores, calls), users, seen, 10, chunk_size=chunk))
        assert max(calls) <= chunk and sum(calls) == 53
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_topk_rejects_nan_and_bad_k() -> None:
    scores = torch.tensor([[0.1, float("nan"), 0.3], [0.1, 0.2, 0.3]])
    with pytest.raises(FloatingPointError, match=r"\[0\]"):
        topk_unseen(matrix_scorer(scores), np.array([0, 1]), None, 2)
    with pytest.raises(PainvrlInputError):
        topk_unseen(matrix_scorer(scores), np.array([1]), None, 4)
    with pytest.raises(PainvrlInputError):
        topk_unseen(matrix_scorer(scores), np.array([1]), None, 0)


# --------------------------------------------------------------------------------------------- metrics


def test_metrics_hand_case_exact_values() -> None:
    _, pos = hand_sets()
    top = np.array([[2, 0, 4], [1, 3, 0]])
    m = metrics_from_topk(top, np.array([0, 1]), pos, ks=[1, 3])
    # K=1: user 0 misses, user 1 hits its only positive.
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["precision@1"] == pytest.approx(0.5)
    assert m["ndcg@1"] == pytest.approx(0.5)
    assert m["hit@1"] == pytest.approx(0.5)
    # K=3: user 0 hits item 0 at rank 1 of its 2 positives; user 1 hits at rank 0.
    assert m["recall@3"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["precision@3"] == pytest.approx(1.0 / 3.0)
    assert m["ndcg@3"] == pytest.approx((L3 / (1.0 + L3) + 1.0) / 2)
    assert m["hit@3"] == pytest.approx(1.0)
    assert m["n_users"] == 2
    assert list(m) == [
        "recall@1", "precision@1", "ndcg@1", "hit@1",
        "recall@3", "precision@3", "ndcg@3", "hit@3", "n_users",
    ]  # fmt: skip


def test_metrics_skip_users_without_positives_and_ignore_padding() -> None:
    pos3 = PositiveSets.from_pairs(HAND_POS, 3, 5)
    top = np.array([[2, 0, -1], [1, 3, 0], [0, 1, 2]])
    m = metrics_from_topk(top, np.array([0, 1, 2]), pos3, ks=[3])
    assert m["n_users"] == 2
    assert m["recall@3"] == pytest.approx(0.75)
    with pytest.raises(PainvrlInputError):
        metrics_from_topk(top[2:], np.array([2]), pos3, ks=[3])
    with pytest.raises(PainvrlInputError):
        metrics_from_topk(top, np.array([0, 1, 1]), pos3, ks=[3])  # duplicate user
    with pytest.raises(PainvrlInputError):
        metrics_from_topk(top, np.array([0, 1, 2]), pos3, ks=[4])  # K longer than the lists


def test_legacy_differs_exactly_where_expected() -> None:
    # user 0: 2 positives, 1 hit at rank 1 -> standard IDCG over min(2, K), legacy over 1 hit.
    # user 1: 1 positive hit at rank 0 -> identical. user 2: positives, no hit -> 0 in both.
    pos = PositiveSets.from_pairs(np.array([[0, 0], [0, 3], [1, 1], [2, 4]]), 3, 5)
    top = np.array([[2, 0, 4], [1, 3, 0], [0, 1, 2]])
    users = np.array([0, 1, 2])
    std = metrics_from_topk(top, users, pos, ks=[1, 3])
    leg = metrics_from_topk(top, users, pos, ks=[1, 3], legacy_invrl=True)
    for key in std:
        if key != "ndcg@3":
            assert leg[key] == pytest.approx(std[key]), key
    assert std["ndcg@3"] == pytest.approx((L3 / (1.0 + L3) + 1.0 + 0.0) / 3)
    assert leg["ndcg@3"] == pytest.approx((L3 + 1.0 + 0.0) / 3)
    # A single user whose hits fill min(|P|, K): both agree.
    one = metrics_from_topk(top[1:2], users[1:2], pos, ks=[3], legacy_invrl=True)
    assert one["ndcg@3"] == pytest.approx(1.0)


def brute_force(
    scores: np.ndarray, seen: dict[int, set[int]], pos: dict[int, set[int]], ks: list[int]
) -> dict[str, float]:
    """Pure-Python per-user reference: sort the unseen items by score, count hits, DCG by loop."""
    sums: dict[str, float] = {}
    n = 0
    for u, p in pos.items():
        if not p:
            continue
        n += 1
        ranked = sorted(
            (i for i in range(scores.shape[1]) if i not in seen.get(u, set())), key=lambda i: -scores[u, i]
        )
        for k in ks:
            top = ranked[:k]
            hits = [i in p for i in top]
            dcg = sum(1.0 / math.log2(r + 2) for r, h in enumerate(hits) if h)
            idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(p), k)))
            for name, val in (
                ("recall", sum(hits) / len(p)),
                ("precision", sum(hits) / k),
                ("ndcg", dcg / idcg),
                ("hit", float(any(hits))),
            ):
                sums[f"{name}@{k}"] = sums.get(f"{name}@{k}", 0.0) + val
    return {key: v / n for key, v in sums.items()} | {"n_users": n}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items, ks = 40, 60, [1, 5, 10, 20]
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    train = np.stack([rng.integers(0, n_users, 500), rng.integers(0, n_items, 500)], 1)
    test = np.stack([rng.integers(0, n_users - 5, 200), rng.integers(0, n_items, 200)], 1)
    seen_sets = PositiveSets.from_pairs(train, n_users, n_items)
    result = evaluate_positives(
        matrix_scorer(torch.from_numpy(scores)), n_items, test, seen_sets, ks, chunk_size=7
    )
    seen: dict[int, set[int]] = {}
    for u, i in train.tolist():
        seen.setdefault(u, set()).add(i)
    pos: dict[int, set[int]] = {}
    for u, i in test.tolist():
        pos.setdefault(u, set()).add(i)
    ref = brute_force(scores, seen, pos, ks)
    assert set(result.overall) == set(ref)
    for key, val in ref.items():
        assert result.overall[key] == pytest.approx(val, abs=1e-12), key


# ----------------------------------------------------------------------------------------- per env, shards


def test_per_env_worst_and_spread_hand_case() -> None:
    seen, _ = hand_sets()
    labels = np.array(["a", "b", "a"])  # (0,0)->a, (0,3)->b, (1,1)->a
    res = evaluate_positives(matrix_scorer(HAND_SCORES), 5, HAND_POS, seen, [3], env_labels=labels)
    assert isinstance(res, SplitMetrics)
    a, b = res.envs["a"], res.envs["b"]
    assert a == pytest.approx(
        {"recall@3": 1.0, "precision@3": 1 / 3, "ndcg@3": (L3 + 1.0) / 2, "hit@3": 1.0, "n_users": 2}
    )
    assert b == pytest.approx(
        {"recall@3": 0.0, "precision@3": 0.0, "ndcg@3": 0.0, "hit@3": 0.0, "n_users": 1}
    )
    assert res.worst_env == pytest.approx({"recall@3": 0.0, "precision@3": 0.0, "ndcg@3": 0.0, "hit@3": 0.0})
    assert res.spread == pytest.approx(
        {"recall@3": 1.0, "precision@3": 1 / 3, "ndcg@3": (L3 + 1.0) / 2, "hit@3": 1.0}
    )
    assert res.overall["recall@3"] == pytest.approx(0.75)
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d) == {"metrics", "envs", "worst_env", "spread"}
    assert d["envs"]["b"]["n_users"] == 1 and d["metrics"]["ndcg@3"] == pytest.approx(res.overall["ndcg@3"])


def test_env_labels_must_match_pairs() -> None:
    seen, _ = hand_sets()
    with pytest.raises(PainvrlInputError):
        evaluate_positives(matrix_scorer(HAND_SCORES), 5, HAND_POS, seen, [3], env_labels=np.array([0, 1]))


def test_sharded_merged_equals_unsharded() -> None:
    rng = np.random.default_rng(5)
    n_users, n_items, ks = 50, 30, [5, 10]
    scores = torch.from_numpy(rng.normal(size=(n_users, n_items)).astype(np.float32))
    train = PositiveSets.from_pairs(
        np.stack([rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)], 1), n_users, n_items
    )
    test = np.stack([rng.integers(0, n_users, 150), rng.integers(0, n_items, 150)], 1)
    labels = rng.integers(0, 3, 150)
    full = evaluate_positives(matrix_scorer(scores), n_items, test, train, ks, env_labels=labels)
    users = PositiveSets.from_pairs(test, n_users, n_items).users_with_items()
    shards = [
        (part, topk_unseen(matrix_scorer(scores), part, train, max(ks), chunk_size=4))
        for part in np.array_split(rng.permutation(users), 3)
    ]
    merged_users, merged_topk = merge_topk_shards(shards[::-1])
    assert merged_users.tolist() == users.tolist()
    sharded = split_metrics_from_topk(merged_users, merged_topk, test, n_items, ks, env_labels=labels)
    assert sharded.to_dict() == full.to_dict()
    # A shard alone misses users with positives (refused); overlapping shards are refused.
    with pytest.raises(PainvrlInputError):
        split_metrics_from_topk(shards[0][0], shards[0][1], test, n_items, ks)
    with pytest.raises(PainvrlInputError):
        merge_topk_shards([shards[0], shards[0]])


def test_sharded_evaluation_equals_single_process() -> None:
    """Ranks rank disjoint user shards; gathered top-K gives exactly the single-process metrics."""
    from painvrl.evaluation.metrics import evaluate_positives, evaluate_positives_sharded

    rng = np.random.default_rng(3)
    n_users, n_items = 40, 60
    scores = torch.tensor(rng.normal(size=(n_users, n_items)), dtype=torch.float32)
    train = np.stack([rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)], axis=1)
    test = np.stack([rng.integers(0, n_users, 120), rng.integers(0, n_items, 120)], axis=1)
    envs = rng.integers(0, 3, len(test))
    exclude = PositiveSets.from_pairs(train, n_users, n_items)

    def score_users(users: torch.Tensor) -> torch.Tensor:
        return scores[users].clone()

    single = evaluate_positives(score_users, n_items, test, exclude, [5, 10], env_labels=envs).to_dict()
    world = 3
    shard_results: list[object] = []
    # simulate the all-gather: run every rank's local ranking first, then give all of them to each rank
    local = []
    for rank in range(world):
        captured: list[object] = []

        def gather(obj: object, captured: list[object] = captured) -> list[object]:
            captured.append(obj)
            raise StopIteration

        try:
            evaluate_positives_sharded(score_users, n_items, test, exclude, [5, 10], rank, world, gather,
                                       env_labels=envs)
        except StopIteration:
            local.append(captured[0])
    for rank in range(world):
        shard_results.append(evaluate_positives_sharded(
            score_users, n_items, test, exclude, [5, 10], rank, world, lambda _obj: list(local),
            env_labels=envs).to_dict())
    for result in shard_results:
        assert result == single
