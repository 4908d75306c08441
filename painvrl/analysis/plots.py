"""Plots of Pareto fronts and hypervolume histories (PNG files).

The front itself is computed by :mod:`painvrl.study.front`; this module only draws. matplotlib is imported
inside the functions and figures are rendered through the Agg canvas directly (no pyplot, no global backend
switch), so drawing is safe in headless processes, threads and Ray workers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from painvrl.errors import PainvrlInputError
from painvrl.study.front import non_dominated_mask

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "BASELINE_SHAPES",
    "OKABE_ITO",
    "draw_front",
    "marker_shapes",
    "plot_front",
    "plot_front_hyperparameters",
    "plot_fronts_overlay",
    "plot_grouped_bars",
    "plot_hypervolume_history",
]

OKABE_ITO = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
    "#000000",  # black
)
"""Okabe-Ito colour-blind-safe palette (Okabe & Ito 2008), most distinguishable colours first."""

_GREY = "#999999"

BASELINE_SHAPES = ("*", "P", "p", "h", "v", "^", "<", ">", "8", "d")
"""Marker shapes of the front plot's labelled points, one per group (a baseline's method) in order of first
appearance; none of them is a shape the plot uses for trials (o, D) or the reference point (X)."""

SHAPE_NAMES = {"*": "star", "P": "plus", "p": "pentagon", "h": "hexagon", "v": "triangle down",
               "^": "triangle up", "<": "triangle left", ">": "triangle right", "8": "octagon", "d": "thin diamond"}
"""How a report names each of :data:`BASELINE_SHAPES`."""

Marker = tuple[str, float, float] | tuple[str, float, float, str]
"""A labelled point of the front plot: ``(label, x, y)`` or ``(label, x, y, group)``."""


def marker_shapes(groups: Sequence[str]) -> dict[str, str]:
    """The shape of each group's markers on the front plot: :data:`BASELINE_SHAPES` in order of the groups'
    first appearance (cycling past the tenth group)."""
    unique = list(dict.fromkeys(groups))
    return {group: BASELINE_SHAPES[index % len(BASELINE_SHAPES)] for index, group in enumerate(unique)}


def _new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    """A figure bound to an Agg canvas without touching pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as PNG to ``path`` (parent folders created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png", dpi=150)
    return target


def _axis_label(column: str, direction: str, labels: Mapping[str, str] | None) -> str:
    name = (labels or {}).get(column, column)
    arrow = "higher is better" if direction == "maximize" else "lower is better"
    return f"{name} ({arrow})"


def _front_steps(front_xy: np.ndarray, directions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Staircase through the front points: between neighbours, pass through their common worst corner.

    The staircase is the boundary of the region the front dominates, so any point on or behind it is
    dominated and any point beyond it would improve the front.
    """
    order = np.lexsort((front_xy[:, 1], front_xy[:, 0]))
    points = front_xy[order]
    xs: list[float] = [float(points[0, 0])]
    ys: list[float] = [float(points[0, 1])]
    worst = [min if direction == "maximize" else max for direction in directions]
    for previous, current in itertools.pairwise(points):
        worse_x = worst[0](previous[0], current[0])
        worse_y = worst[1](previous[1], current[1])
        xs.extend([float(worse_x), float(current[0])])
        ys.extend([float(worse_y), float(current[1])])
    return np.asarray(xs), np.asarray(ys)


def plot_front(
    df: pd.DataFrame,
    x: str,
    y: str,
    directions: Sequence[str],
    path: str | Path,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotate: str | None = None,
    markers: Sequence[Marker] = (),
    reference: tuple[str, float, float] | None = None,
) -> Path:
    """Scatter the trials of ``df`` on two objectives, draw their Pareto front as a staircase and write the PNG
    (the figure of :func:`draw_front`, whose arguments it takes).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    figure = draw_front(df, x, y, directions, title=title, labels=labels, annotate=annotate, markers=markers,
                        reference=reference)
    return _save(figure, path)


def draw_front(
    df: pd.DataFrame,
    x: str,
    y: str,
    directions: Sequence[str],
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotate: str | None = None,
    markers: Sequence[Marker] = (),
    reference: tuple[str, float, float] | None = None,
) -> Figure:
    """The front plot's figure: the trials of ``df`` on two objectives, their Pareto front as a staircase, the
    labelled markers and the reference point.

    Args:
        df: one row per trial; rows with a missing ``x`` or ``y`` are skipped.
        x, y: objective column names.
        directions: ``"maximize"`` / ``"minimize"`` for ``x`` and ``y``.
        title: figure title.
        labels: display names for columns, e.g. ``{"val_iid_recall@20": "Recall@20 (IID)"}``.
        annotate: optional column whose values label the front points (e.g. a trial id).
        markers: labelled points ``(label, x, y)`` or ``(label, x, y, group)`` drawn over the trials (the study's
            baselines, grouped by method), each with its own legend entry and colour; the markers of one group
            share a shape (:data:`BASELINE_SHAPES`, in order of the groups' first appearance), those of different
            groups differ. Non-finite points are left out.
        reference: the hypervolume reference point ``(label, x, y)`` (the erm run of a default study), drawn as
            a cross with dotted lines through it: the trials that beat it in both objectives lie beyond both.
    """
    for column in (x, y) + ((annotate,) if annotate else ()):
        if column not in df.columns:
            raise PainvrlInputError(f"column {column!r} not in the table; available: {list(df.columns)}")
    if len(directions) != 2:
        raise PainvrlInputError(f"plot_front needs 2 directions (for {x!r} and {y!r}), got {len(directions)}")
    values = df[[x, y]].to_numpy(dtype=float)
    finite = np.all(np.isfinite(values), axis=1)
    on_front = non_dominated_mask(values, directions)

    figure = _new_figure()
    axes: Any = figure.add_subplot()
    dominated = finite & ~on_front
    axes.scatter(
        values[dominated, 0], values[dominated, 1], s=22, color=_GREY, alpha=0.8, label="dominated trials"
    )
    if on_front.any():
        front_xy = values[on_front]
        step_x, step_y = _front_steps(front_xy, directions)
        axes.plot(step_x, step_y, color=OKABE_ITO[3], linewidth=1.6, label="Pareto front")
        axes.scatter(
            front_xy[:, 0],
            front_xy[:, 1],
            s=40,
            color=OKABE_ITO[4],
            marker="D",
            zorder=3,
            label=f"front trials ({int(on_front.sum())})",
        )
        if annotate:
            for (px, py), text in zip(front_xy, df.loc[on_front, annotate], strict=True):
                axes.annotate(str(text), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    shapes = marker_shapes([marker[3] if len(marker) > 3 else "" for marker in markers])
    for index, marker in enumerate(markers):
        text, px, py = marker[0], marker[1], marker[2]
        if not (np.isfinite(px) and np.isfinite(py)):
            continue
        shape = shapes[marker[3] if len(marker) > 3 else ""]
        axes.scatter([px], [py], s=90 if shape == "*" else 60, marker=shape,
                     color=OKABE_ITO[(index + 5) % len(OKABE_ITO)], zorder=4, edgecolors="black", linewidths=0.5,
                     label=text)
        axes.annotate(text, (px, py), textcoords="offset points", xytext=(5, -9), fontsize=7)
    if reference is not None and np.isfinite(reference[1]) and np.isfinite(reference[2]):
        text, rx, ry = reference
        axes.axvline(rx, color="black", linestyle=":", linewidth=0.9, zorder=1)
        axes.axhline(ry, color="black", linestyle=":", linewidth=0.9, zorder=1)
        axes.scatter([rx], [ry], s=70, marker="X", color="black", zorder=4, label=text)
        axes.annotate(text, (rx, ry), textcoords="offset points", xytext=(5, 5), fontsize=7)
    axes.set_xlabel(_axis_label(x, directions[0], labels))
    axes.set_ylabel(_axis_label(y, directions[1], labels))
    axes.set_title(title if title is not None else f"Pareto front: {int(finite.sum())} trials")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return figure


def plot_hypervolume_history(
    histories: Mapping[str, np.ndarray | Sequence[float]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Plot hypervolume against the number of finished trials, one line per study / sampler.

    Args:
        histories: name -> hypervolume of the first t trials (from
            :func:`painvrl.study.front.hypervolume_history`).
        path: PNG file to write (parent folders are created).
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not histories:
        raise PainvrlInputError("plot_hypervolume_history needs at least one history")
    figure = _new_figure()
    axes: Any = figure.add_subplot()
    for index, (name, history) in enumerate(histories.items()):
        values = np.asarray(history, dtype=float)
        if values.ndim != 1:
            raise PainvrlInputError(f"history {name!r} must be 1-D, got shape {values.shape}")
        trials = np.arange(1, values.size + 1)
        axes.step(
            trials, values, where="post", color=OKABE_ITO[index % len(OKABE_ITO)], linewidth=1.6, label=name
        )
    axes.set_xlabel("finished trials")
    axes.set_ylabel("hypervolume (higher is better)")
    axes.set_title(title if title is not None else "Hypervolume history")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_grouped_bars(
    table: pd.DataFrame,
    group: str,
    series: str,
    value: str,
    path: str | Path,
    ylabel: str,
    title: str | None = None,
    xlabel: str | None = None,
) -> Path:
    """Grouped bar chart of a long table: one group of bars per ``group`` value, one colour per ``series``.

    Used for per-environment metrics of front trials (group = trial, series = environment) and for mask
    density per modality (group = trial, series = modality). Bars carry hatches as well as Okabe-Ito colours.

    Args:
        table: long table with columns ``group``, ``series`` and ``value`` (missing combinations are left out).
        group, series, value: column names.
        path: PNG file to write (parent folders are created).
        ylabel: y-axis label, with units.
        title: figure title.
        xlabel: x-axis label (default: ``group``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    for column in (group, series, value):
        if column not in table.columns:
            raise PainvrlInputError(f"column {column!r} not in the table; available: {list(table.columns)}")
    if table.empty:
        raise PainvrlInputError("plot_grouped_bars needs a non-empty table")
    groups = list(dict.fromkeys(table[group].astype(str)))
    names = list(dict.fromkeys(table[series].astype(str)))
    width = 0.8 / len(names)
    hatches = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")
    figure = _new_figure(width=max(6.0, 0.5 * len(groups) * max(1, len(names)) ** 0.5 + 2.0))
    axes: Any = figure.add_subplot()
    for index, name in enumerate(names):
        rows = table[table[series].astype(str) == name]
        by_group = dict(zip(rows[group].astype(str), rows[value].astype(float), strict=False))
        xs = [i + (index - (len(names) - 1) / 2) * width for i, g in enumerate(groups) if g in by_group]
        heights = [by_group[g] for g in groups if g in by_group]
        axes.bar(xs, heights, width=width, color=OKABE_ITO[index % len(OKABE_ITO)], edgecolor="black",
                 linewidth=0.4, hatch=hatches[index % len(hatches)], label=name)
    axes.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0, ha="right"
                    if len(groups) > 6 else "center", fontsize=8)
    axes.set_xlabel(xlabel if xlabel is not None else group)
    axes.set_ylabel(ylabel)
    axes.set_title(title if title is not None else f"{value} by {group} and {series}")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="best", fontsize=8, title=series, title_fontsize=8)
    return _save(figure, path)


def plot_front_hyperparameters(
    front: pd.DataFrame,
    objective: str,
    direction: str,
    parameters: Sequence[str],
    path: str | Path,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """The chosen hyperparameters along the front: one panel per parameter, value against ``objective``.

    Front points are joined in objective order so trends along the front show; categorical parameters are
    drawn on a categorical axis.

    Args:
        front: one row per front trial.
        objective: the objective column on the x axis.
        direction: its direction (``"maximize"`` / ``"minimize"``), shown in the axis label.
        parameters: hyperparameter columns, one panel each.
        path: PNG file to write (parent folders are created).
        labels: display names for columns.
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    missing = [c for c in (objective, *parameters) if c not in front.columns]
    if missing:
        raise PainvrlInputError(f"column(s) {missing} not in the table; available: {list(front.columns)}")
    if not parameters:
        raise PainvrlInputError("plot_front_hyperparameters needs at least one parameter column")
    n = len(parameters)
    n_cols = min(3, n)
    n_rows = (n + n_cols - 1) // n_cols
    figure = _new_figure(width=3.4 * n_cols + 0.6, height=2.8 * n_rows + 0.6)
    ordered = front.sort_values(objective, kind="mergesort")
    xs = ordered[objective].to_numpy(dtype=float)
    for index, parameter in enumerate(parameters):
        axes: Any = figure.add_subplot(n_rows, n_cols, index + 1)
        values = ordered[parameter]
        if pd.api.types.is_numeric_dtype(values):
            ys: Any = values.to_numpy(dtype=float)
        else:
            ys = values.astype(str).to_numpy()
        colour = OKABE_ITO[index % len(OKABE_ITO)]
        axes.plot(xs, ys, color=colour, linewidth=1.2, marker=_MARKERS[index % len(_MARKERS)], markersize=5)
        axes.set_xlabel(_axis_label(objective, direction, labels), fontsize=8)
        axes.set_ylabel((labels or {}).get(parameter, parameter), fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(True, alpha=0.3)
    figure.suptitle(title if title is not None else f"Hyperparameters along the front ({len(front)} trials)")
    return _save(figure, path)


def plot_fronts_overlay(
    tables: Mapping[str, pd.DataFrame],
    x: str,
    y: str,
    directions: Sequence[str],
    path: str | Path,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Several studies' trials and Pareto fronts on shared axes, one colour and marker per study.

    Args:
        tables: study name -> one row per trial with columns ``x`` and ``y``.
        x, y: objective columns (the same objectives in every study).
        directions: directions of ``x`` and ``y``.
        path: PNG file to write (parent folders are created).
        labels: display names for columns.
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not tables:
        raise PainvrlInputError("plot_fronts_overlay needs at least one study")
    if len(directions) != 2:
        raise PainvrlInputError(f"plot_fronts_overlay needs 2 directions, got {len(directions)}")
    figure = _new_figure(width=6.5)
    axes: Any = figure.add_subplot()
    for index, (name, df) in enumerate(tables.items()):
        for column in (x, y):
            if column not in df.columns:
                raise PainvrlInputError(f"study {name!r}: column {column!r} not in its table")
        values = df[[x, y]].to_numpy(dtype=float)
        values = values[np.all(np.isfinite(values), axis=1)]
        colour, marker = OKABE_ITO[index % len(OKABE_ITO)], _MARKERS[index % len(_MARKERS)]
        axes.scatter(values[:, 0], values[:, 1], s=14, color=colour, marker=marker, alpha=0.35)
        if len(values):
            front_xy = values[non_dominated_mask(values, directions)]
            step_x, step_y = _front_steps(front_xy, directions)
            axes.plot(step_x, step_y, color=colour, linewidth=1.6)
            axes.scatter(front_xy[:, 0], front_xy[:, 1], s=40, color=colour, marker=marker, edgecolor="black",
                         linewidth=0.5, zorder=3, label=f"{name}: front {len(front_xy)} of {len(values)}")
    axes.set_xlabel(_axis_label(x, directions[0], labels))
    axes.set_ylabel(_axis_label(y, directions[1], labels))
    axes.set_title(title if title is not None else "Pareto fronts (faint: dominated trials)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)
