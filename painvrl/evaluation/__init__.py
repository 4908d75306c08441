"""Full-ranking evaluation: top-K over unseen items, Recall/Precision/NDCG/Hit @K, per-environment metrics."""

from __future__ import annotations

from painvrl.evaluation.metrics import (
    SplitMetrics,
    evaluate_positives,
    metrics_from_topk,
    split_metrics_from_topk,
)
from painvrl.evaluation.ranking import PositiveSets, merge_topk_shards, topk_unseen

__all__ = [
    "PositiveSets",
    "SplitMetrics",
    "evaluate_positives",
    "merge_topk_shards",
    "metrics_from_topk",
    "split_metrics_from_topk",
    "topk_unseen",
]
