"""Tests for painvrl.study.front: hand-built fronts, brute force and Optuna's hypervolume as references."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from painvrl.errors import PainvrlInputError
from painvrl.study.front import front_table, hypervolume, hypervolume_history, non_dominated_mask


def _brute_force_mask(points: np.ndarray, directions: list[str]) -> np.ndarray:
    """O(n^2) definition of non-domination, written loop by loop."""
    n, m = points.shape
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not np.all(np.isfinite(points[i])):
            mask[i] = False
            continue
        for j in range(n):
            if i == j or not np.all(np.isfinite(points[j])):
                continue
            # sign +1 turns every objective into "larger is better"
            signs = [1.0 if d == "maximize" else -1.0 for d in directions]
            no_worse = all(signs[k] * points[j, k] >= signs[k] * points[i, k] for k in range(m))
            better = any(signs[k] * points[j, k] > signs[k] * points[i, k] for k in range(m))
            if no_worse and better:
                mask[i] = False
                break
    return mask


def _optuna_hypervolume(points: np.ndarray, reference: np.ndarray, directions: list[str]) -> float:
    """Optuna's private exact hypervolume (minimisation only; it rejects points not within the reference)."""
    from optuna._hypervolume import compute_hypervolume

    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    losses, ref = points * signs, reference * signs
    inside = np.all(losses < ref, axis=1)
    return float(compute_hypervolume(losses[inside], ref))


def test_mask_hand_built_maximize_minimize() -> None:
    # objective 0 maximised (recall), objective 1 minimised (gap)
    points = np.array([[0.30, 0.10], [0.20, 0.05], [0.25, 0.20], [0.30, 0.10], [0.10, 0.01], [0.05, 0.02]])
    mask = non_dominated_mask(points, ["maximize", "minimize"])
    # [0.25, 0.20] is dominated by [0.30, 0.10]; [0.05, 0.02] by [0.10, 0.01]; duplicates both stay.
    assert mask.tolist() == [True, True, False, True, True, False]


def test_mask_nan_rows_never_on_front_and_never_dominate() -> None:
    points = np.array([[1.0, 1.0], [np.nan, 5.0], [0.5, 0.5]])
    mask = non_dominated_mask(points, ["maximize", "maximize"])
    assert mask.tolist() == [True, False, False]


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_mask_equals_brute_force(m: int) -> None:
    rng = np.random.default_rng(m)
    for directions in itertools.product(["maximize", "minimize"], repeat=m):
        # a coarse grid creates ties and duplicates, the hard cases
        points = rng.integers(0, 5, size=(40, m)).astype(float)
        expected = _brute_force_mask(points, list(directions))
        np.testing.assert_array_equal(non_dominated_mask(points, directions), expected)


def test_hypervolume_hand_built_2d() -> None:
    # minimise both; reference (4, 4); staircase of (1,3), (2,2), (3,1): area 3 + 2 + 1 = 6
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.5, 3.5]])
    assert hypervolume(points, [4.0, 4.0], ["minimize", "minimize"]) == pytest.approx(6.0)
    # the same set maximised after negation
    assert hypervolume(-points, [-4.0, -4.0], ["maximize", "maximize"]) == pytest.approx(6.0)


def test_hypervolume_hand_built_3d() -> None:
    # two unit-overlapping boxes from the origin reference: 2*1*1 + 1*2*1 - 1*1*1 = 3
    points = np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]])
    assert hypervolume(points, [0.0, 0.0, 0.0], ["maximize"] * 3) == pytest.approx(3.0)


def test_hypervolume_ignores_points_outside_reference() -> None:
    points = np.array([[1.0, 1.0], [5.0, 0.5], [4.0, 2.0], [np.nan, 0.0]])
    # only (1, 1) strictly beats the reference (4, 4) in both; (4, 2) touches the boundary -> adds nothing
    assert hypervolume(points, [4.0, 4.0], ["minimize", "minimize"]) == pytest.approx(9.0)
    assert hypervolume(points[1:2], [4.0, 4.0], ["minimize", "minimize"]) == 0.0
    assert hypervolume(np.empty((0, 2)), [4.0, 4.0], ["minimize", "minimize"]) == 0.0


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_equals_optuna(m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    directions = list(rng.choice(["maximize", "minimize"], size=m))
    n = int(rng.integers(1, 60))
    points = rng.normal(size=(n, m))
    if seed % 2:
        points = np.round(points, 1)  # ties
    reference = np.array([-1.5 if d == "maximize" else 1.5 for d in directions])  # some points outside
    expected = _optuna_hypervolume(points, reference, directions)
    assert hypervolume(points, reference, directions) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_hypervolume_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="1 to 3 objectives"):
        hypervolume(np.zeros((3, 4)), np.ones(4), ["minimize"] * 4)
    with pytest.raises(PainvrlInputError, match="reference must have shape"):
        hypervolume(np.zeros((3, 2)), np.ones(3), ["minimize"] * 2)
    with pytest.raises(PainvrlInputError, match="directions\\[1\\]"):
        hypervolume(np.zeros((3, 2)), np.ones(2), ["minimize", "max"])
    with pytest.raises(PainvrlInputError, match="2 entries"):
        non_dominated_mask(np.zeros((3, 3)), ["minimize", "minimize"])


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_history_is_monotone_and_matches_prefixes(m: int) -> None:
    rng = np.random.default_rng(7 + m)
    directions = ["maximize"] + ["minimize"] * (m - 1)
    points = rng.uniform(size=(50, m))
    points[10] = np.nan  # a failed trial
    reference = np.array([0.0] + [1.0] * (m - 1))
    history = hypervolume_history(points, reference, directions)
    assert history.shape == (50,)
    assert np.all(np.diff(history) >= 0.0)
    assert history[10] == history[9]
    for t in (1, 11, 25, 50):
        assert history[t - 1] == pytest.approx(hypervolume(points[:t], reference, directions), rel=1e-12)
    assert history[-1] > 0.0


def test_front_table_marks_and_sorts() -> None:
    df = pd.DataFrame(
        {
            "trial": ["a", "b", "c", "d", "e"],
            "recall": [0.30, 0.20, 0.25, np.nan, 0.35],
            "gap": [0.10, 0.05, 0.20, 0.0, 0.30],
        },
        index=[10, 11, 12, 13, 14],
    )
    table = front_table(df, ["recall", "gap"], ["maximize", "minimize"])
    assert table["trial"].tolist() == ["e", "a", "c", "b", "d"]  # recall descending, NaN last
    assert table["on_front"].tolist() == [True, True, False, True, False]
    assert table.index.tolist() == [14, 10, 12, 11, 13]
    assert "on_front" not in df.columns  # input untouched


def test_front_table_errors_name_the_column() -> None:
    df = pd.DataFrame({"recall": [0.1], "name": ["x"]})
    with pytest.raises(PainvrlInputError, match="'gap'"):
        front_table(df, ["recall", "gap"], ["maximize", "minimize"])
    with pytest.raises(PainvrlInputError, match="'name' is not numeric"):
        front_table(df, ["recall", "name"], ["maximize", "minimize"])
