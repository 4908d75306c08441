"""mask_summary and flatten_metrics: what metrics.json says about a mask against the synthetic ground truth, and
what a run logs to MLflow."""

from __future__ import annotations

import numpy as np
import pytest

from painvrl.training.results import flatten_metrics, mask_summary


def test_open_sets_say_what_the_final_model_reads_where_auc_counts_ties() -> None:
    invariant = np.array([True, True, True, True, False, False, False, False])
    # A sparse mask that closes every spurious dim and one redundant invariant dim: the final model reads only
    # invariant dims, yet AUC counts the closed invariant dim as tied with the four closed spurious ones.
    mask = np.array([1.0, 0.7, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
    summary = mask_summary(mask, {"v": slice(0, 4), "t": slice(4, 8)}, invariant, learned=True)
    assert summary["auc"] == pytest.approx(0.875)
    assert summary["invariant_open"] == pytest.approx(0.75)
    assert summary["spurious_open"] == 0.0
    assert summary["invariant_mass"] == 1.0
    assert summary["fraction_open"] == pytest.approx(3 / 8)

    leaky = mask.copy()
    leaky[4] = 0.3
    summary = mask_summary(leaky, {"all": slice(0, 8)}, invariant, learned=True)
    assert summary["spurious_open"] == pytest.approx(0.25)
    assert summary["invariant_mass"] == pytest.approx(2.1 / 2.4)


def test_without_ground_truth_or_mask_there_is_nothing_to_score() -> None:
    summary = mask_summary(None, {"all": slice(0, 3)}, None, learned=False)
    assert summary["density"] == 1.0 and "auc" not in summary and "spurious_open" not in summary
    closed = mask_summary(np.zeros(2), {"all": slice(0, 2)}, np.array([True, False]), learned=True)
    assert closed["invariant_mass"] is None and closed["invariant_open"] == 0.0


def test_flat_metrics_carry_the_learned_environments_sizes_and_worst_environment() -> None:
    metrics = {"test": {"iid": {"metrics": {"recall@20": 0.3}}, "worst_env": {"recall@20": 0.1},
                        "envs": {"0": {"recall@20": 0.1}}},
               "environments": {"source": "learned", "sizes": [70, 30], "ari": 0.4}}
    flat = flatten_metrics(metrics)
    assert flat == {"test.iid.recall@20": 0.3, "test.worst_env.recall@20": 0.1, "environments.ari": 0.4,
                    "environments.size.0": 70.0, "environments.size.1": 30.0}
    truth = {"environments": {"source": "ground_truth", "sizes": [50, 50]}}
    assert flatten_metrics(truth) == {}  # the true environments are data, not something a run found


def test_flat_metrics_say_whether_the_gradient_start_was_used() -> None:
    used = {"phase": "hei", "round": 0, "init": "gradient", "init_choice": {"difficulty_alignment": 0.2},
            "kept_iteration": 0, "kept_alignment": 0.1}
    fell_back = {"phase": "hei", "round": 0, "init": "random", "init_choice": {"difficulty_alignment": 0.8}}
    later_round = {"phase": "hei", "round": 1, "init": None}
    assert flatten_metrics({"mask_history": [{"phase": "pretrain"}, used, later_round]}) == {
        "environments.difficulty_alignment": 0.2, "environments.gradient_start_used": 1.0,
        "environments.kept_iteration": 0.0, "environments.kept_alignment": 0.1}
    assert flatten_metrics({"environment_history": [fell_back]}) == {
        "environments.difficulty_alignment": 0.8, "environments.gradient_start_used": 0.0}
    assert flatten_metrics({"mask_history": [later_round]}) == {}
