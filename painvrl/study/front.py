"""Pareto fronts and hypervolume: pure computations on arrays and DataFrames (numpy + pandas only).

Every function takes ``directions``, one of ``"maximize"`` / ``"minimize"`` per objective, and works in the
objectives' own units: internally maximised objectives are negated so that everything is minimised.

Conventions shared by all functions:

- A point *dominates* another when it is at least as good in every objective and strictly better in one.
  Equal points do not dominate each other, so duplicates of a front point are all on the front.
- Rows with a non-finite value (NaN from a failed trial, +-inf) are never on the front, never dominate
  anything and add no hypervolume.
- Hypervolume counts the region dominated by the points and bounded by ``reference``. A point that does not
  strictly beat the reference in every objective encloses no volume and is ignored (no error): a reference
  chosen as "the worst acceptable value" therefore simply filters out unacceptable trials.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from painvrl.errors import PainvrlInputError

__all__ = [
    "DIRECTIONS",
    "front_table",
    "hypervolume",
    "hypervolume_history",
    "non_dominated_mask",
]

DIRECTIONS = ("maximize", "minimize")
"""The accepted spellings of an objective's direction (Optuna's)."""


def _signs(directions: Sequence[str], n_objectives: int) -> np.ndarray:
    """Return +1 for minimised and -1 for maximised objectives, validating ``directions``."""
    if isinstance(directions, str):
        raise PainvrlInputError(
            f"directions must be a sequence with one of {DIRECTIONS} per objective, "
            f"got the string {directions!r}"
        )
    if len(directions) != n_objectives:
        raise PainvrlInputError(
            f"directions has {len(directions)} entries but the points have {n_objectives} objectives"
        )
    signs = np.empty(n_objectives, dtype=float)
    for i, direction in enumerate(directions):
        if direction == "minimize":
            signs[i] = 1.0
        elif direction == "maximize":
            signs[i] = -1.0
        else:
            raise PainvrlInputError(f"directions[{i}] is {direction!r}; expected one of {DIRECTIONS}")
    return signs


def _as_points(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Return ``points`` as a float array of shape (n, m) with m >= 1."""
    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or array.shape[1] < 1:
        raise PainvrlInputError(
            f"points must be a 2-D array (n_points, n_objectives), got shape {array.shape}"
        )
    return array


def _to_minimisation(
    points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (points in minimisation form, signs)."""
    array = _as_points(points)
    signs = _signs(directions, array.shape[1])
    return array * signs, signs


def _mask_minimisation(losses: np.ndarray) -> np.ndarray:
    """Non-dominated mask for finite-or-not losses, all minimised. O(n^2 m) time, O(n m) memory."""
    n = losses.shape[0]
    finite = np.all(np.isfinite(losses), axis=1)
    mask = finite.copy()
    candidates = losses[finite]
    for i in np.flatnonzero(finite):
        point = losses[i]
        no_worse = np.all(candidates <= point, axis=1)
        better = np.any(candidates < point, axis=1)
        if np.any(no_worse & better):
            mask[i] = False
    assert mask.shape == (n,)
    return mask


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Point ``a`` is at least as good as ``b`` in every objective and strictly better in one."""
    (la, lb), _ = _to_minimisation([list(a), list(b)], directions)
    return bool(np.all(la <= lb) and np.any(la < lb))


def non_dominated_mask(
    points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]
) -> np.ndarray:
    """Return a boolean array, True for the points no other point dominates.

    Args:
        points: shape (n_points, n_objectives), in the objectives' own units.
        directions: ``"maximize"`` or ``"minimize"`` per objective.

    Returns:
        bool array of shape (n_points,). Rows with a non-finite value are False.
    """
    losses, _ = _to_minimisation(points, directions)
    return _mask_minimisation(losses)


def _hv2d(front: np.ndarray, reference: np.ndarray) -> float:
    """2-D hypervolume (minimisation) of points that all strictly beat ``reference``: one sorted sweep."""
    order = np.lexsort((front[:, 1], front[:, 0]))
    xs, ys = front[order, 0], front[order, 1]
    # Running best y from left to right: a point only adds area below the best y seen so far.
    best_y = np.minimum.accumulate(ys)
    upper_y = np.concatenate([[reference[1]], best_y[:-1]])
    heights = np.clip(upper_y - ys, 0.0, None)
    widths = reference[0] - xs
    return float(widths @ heights)


def _hv3d(front: np.ndarray, reference: np.ndarray) -> float:
    """3-D hypervolume (minimisation) by slicing along the third objective; each slab is a 2-D sweep."""
    order = np.argsort(front[:, 2], kind="stable")
    sorted_front = front[order]
    z_levels = np.concatenate([sorted_front[:, 2], [reference[2]]])
    volume = 0.0
    for k in range(sorted_front.shape[0]):
        thickness = z_levels[k + 1] - z_levels[k]
        if thickness > 0.0:
            # Points with z <= z_k cover the slab [z_k, z_{k+1}) with their (x, y) dominated area.
            volume += thickness * _hv2d(sorted_front[: k + 1, :2], reference[:2])
    return volume


def _hypervolume_minimisation(losses: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of minimisation ``losses`` w.r.t. ``reference``; ignores rows not strictly beating it."""
    inside = np.all(np.isfinite(losses), axis=1) & np.all(losses < reference, axis=1)
    candidates = losses[inside]
    if candidates.shape[0] == 0:
        return 0.0
    candidates = candidates[_mask_minimisation(candidates)]
    if candidates.shape[1] == 1:
        return float(reference[0] - candidates[:, 0].min())
    if candidates.shape[1] == 2:
        return _hv2d(candidates, reference)
    return _hv3d(candidates, reference)


def _prepare_hypervolume(
    points: np.ndarray | Sequence[Sequence[float]],
    reference: np.ndarray | Sequence[float],
    directions: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs and return (losses, reference) in minimisation form."""
    losses, signs = _to_minimisation(points, directions)
    m = losses.shape[1]
    if m > 3:
        raise PainvrlInputError(
            f"hypervolume supports 1 to 3 objectives, got {m}; "
            "use a dedicated library (e.g. moocore) for more"
        )
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (m,):
        raise PainvrlInputError(f"reference must have shape ({m},) to match the points, got {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise PainvrlInputError(f"reference must be finite, got {ref.tolist()}")
    return losses, ref * signs


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]],
    reference: np.ndarray | Sequence[float],
    directions: Sequence[str],
) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference`` (1 to 3 objectives).

    Two objectives use an O(n log n) sweep, three slice along the last objective (O(n^2 log n) on the front).
    Points that do not strictly beat ``reference`` in every objective, and non-finite rows, add nothing.

    Args:
        points: shape (n_points, n_objectives) in the objectives' own units.
        reference: shape (n_objectives,): the worst value counted per objective (e.g. 0 for a recall that is
            maximised, an upper bound for a loss that is minimised).
        directions: ``"maximize"`` or ``"minimize"`` per objective.

    Raises:
        PainvrlInputError (a ValueError): more than 3 objectives, mismatched shapes, unknown directions or a
            non-finite reference.
    """
    losses, ref = _prepare_hypervolume(points, reference, directions)
    return _hypervolume_minimisation(losses, ref)


def hypervolume_history(
    points_in_trial_order: np.ndarray | Sequence[Sequence[float]],
    reference: np.ndarray | Sequence[float],
    directions: Sequence[str],
) -> np.ndarray:
    """Hypervolume of the first t trials, for t = 1 .. n (non-decreasing by construction).

    Only the running front is kept: a trial that is dominated by it (or does not beat the reference) leaves
    the value unchanged without recomputing.

    Returns:
        float array of shape (n_points,).
    """
    losses, ref = _prepare_hypervolume(points_in_trial_order, reference, directions)
    history = np.zeros(losses.shape[0], dtype=float)
    front = np.empty((0, losses.shape[1]), dtype=float)
    current = 0.0
    for t, point in enumerate(losses):
        if np.all(np.isfinite(point)) and np.all(point < ref):
            dominated = np.any(np.all(front <= point, axis=1) & np.any(front < point, axis=1))
            if not dominated:
                still_on_front = ~(np.all(point <= front, axis=1) & np.any(point < front, axis=1))
                front = np.vstack([front[still_on_front], point])
                current = _hypervolume_minimisation(front, ref)
        history[t] = current
    return history


def front_table(
    df: pd.DataFrame, objective_columns: Sequence[str], directions: Sequence[str]
) -> pd.DataFrame:
    """Return a copy of ``df`` with a bool ``on_front`` column, best first by the first objective.

    Rows are sorted by the first objective in its own direction (highest first when maximised), ties broken
    by the following objectives the same way; rows with a missing objective go last. The index is kept so
    rows can be traced back to ``df``.

    Raises:
        PainvrlInputError: a named column is missing or not numeric, or directions do not match.
    """
    columns = list(objective_columns)
    if not columns:
        raise PainvrlInputError("objective_columns must name at least one column")
    _signs(directions, len(columns))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PainvrlInputError(
            f"objective column(s) {missing} not in the table; available columns: {list(df.columns)}"
        )
    for column in columns:
        if not pd.api.types.is_numeric_dtype(df[column]):
            raise PainvrlInputError(f"objective column {column!r} is not numeric (dtype {df[column].dtype})")
    table = df.copy()
    table["on_front"] = non_dominated_mask(table[columns].to_numpy(dtype=float), directions)
    ascending = [d == "minimize" for d in directions]
    return table.sort_values(by=columns, ascending=ascending, na_position="last", kind="mergesort")
