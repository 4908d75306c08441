"""The invariance-violation diagnostic: hand-computed values, and the true partition of a planted shift ranked
far above random partitions of the same sizes."""

from __future__ import annotations

import numpy as np
import pytest

from painvrl.invariance.diagnostics import loss_f_statistic, partition_violation, violation


def test_violation_is_the_variance_of_environment_mean_losses() -> None:
    losses = np.array([1.0, 3.0, 10.0, 14.0, 5.0])
    labels = np.array([0, 0, 1, 1, 2])
    assert violation(losses, labels, 3) == pytest.approx(np.var([2.0, 12.0, 5.0]))
    assert violation(losses, np.zeros(5, dtype=np.int64), 2) == 0.0  # one non-empty environment


def test_the_true_partition_ranks_above_random_balanced_ones() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], [3000, 1000])
    # the reference model fits the minority environment worse (its spurious effect points the other way)
    losses = rng.gamma(2.0, 0.5, size=4000) + 0.3 * truth
    found = partition_violation(losses, truth, 2, seed=1)
    assert found["z"] > 20 and found["ratio"] > 50
    shuffled = partition_violation(losses, rng.permutation(truth), 2, seed=1)
    assert abs(shuffled["z"]) < 4
    assert found["violation"] > shuffled["violation"]


def test_loss_f_statistic_is_the_one_way_anova_f() -> None:
    losses = np.array([1.0, 3.0, 10.0, 14.0, 5.0, 7.0])
    labels = np.array([0, 0, 1, 1, 2, 2])
    means, grand = np.array([2.0, 12.0, 6.0]), losses.mean()
    between = (2 * (means - grand) ** 2).sum() / 2
    within = ((losses - means[labels]) ** 2).sum() / 3
    assert loss_f_statistic(losses, labels, 3) == pytest.approx(between / within)
    assert loss_f_statistic(losses, np.zeros(6, dtype=np.int64), 2) == 0.0  # one non-empty environment


def test_loss_f_statistic_ranks_the_true_cut_above_cuts_at_other_shares() -> None:
    """A quarter of the positives is fitted worse: among cuts of the losses' order at every share, the F of the
    true partition is the largest, while random partitions of any share stay near 1."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], [3000, 1000])
    losses = rng.gamma(2.0, 0.5, size=4000) + 0.3 * truth
    true_f = loss_f_statistic(losses, truth, 2)
    for share in (0.1, 0.25, 0.5, 0.75, 0.9):
        shuffled = (rng.permutation(4000) < int(share * 4000)).astype(np.int64)
        assert loss_f_statistic(losses, shuffled, 2) < 15 < true_f
    noisy_score = 0.3 * truth + rng.normal(0.0, 0.3, size=4000)  # a direction that carries the split, noisily
    order = np.argsort(-noisy_score)
    cuts = {}
    for share in (0.1, 0.2, 0.25, 0.3, 0.5, 0.75):
        labels = np.zeros(4000, dtype=np.int64)
        labels[order[: int(share * 4000)]] = 1
        cuts[share] = loss_f_statistic(losses, labels, 2)
    assert max(cuts, key=lambda s: cuts[s]) in (0.2, 0.25, 0.3), cuts
