"""The invariance-violation diagnostic: hand-computed values, and the true partition of a planted shift ranked
far above random partitions of the same sizes."""

from __future__ import annotations

import numpy as np
import pytest

from painvrl.invariance.diagnostics import partition_violation, violation


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
