"""Tests for painvrl.analysis.plots: the PNG files are written and valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from painvrl.analysis.plots import plot_front, plot_hypervolume_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(8) == PNG_MAGIC


@pytest.mark.parametrize("directions", [["maximize", "minimize"], ["minimize", "minimize"]])
def test_plot_front_writes_png(tmp_path: Path, directions: list[str]) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"recall": rng.uniform(size=30), "gap": rng.uniform(size=30), "trial": range(30)})
    df.loc[3, "recall"] = np.nan
    target = tmp_path / "sub" / "front.png"
    result = plot_front(
        df, "recall", "gap", directions, target, title="t", labels={"recall": "Recall@20"}, annotate="trial"
    )
    assert result == target
    assert target.stat().st_size > 1000
    assert _is_png(target)


def test_plot_hypervolume_history_writes_png(tmp_path: Path) -> None:
    target = tmp_path / "hv.png"
    result = plot_hypervolume_history({"tpe": np.linspace(0, 1, 20), "random": [0.0, 0.1, 0.1, 0.4]}, target)
    assert result == target
    assert _is_png(target)


def test_plot_front_draws_the_reference_point(tmp_path: Path) -> None:
    """The reference (the erm run of a study) is drawn: the figure differs from the one without it, pixel by
    pixel, and a non-finite reference is left out."""
    from matplotlib.image import imread

    df = pd.DataFrame({"iid": [0.30, 0.20, 0.15, 0.25], "ood": [0.10, 0.20, 0.12, 0.15]})
    directions = ["maximize", "maximize"]
    plain = plot_front(df, "iid", "ood", directions, tmp_path / "plain.png", title="t")
    drawn = plot_front(df, "iid", "ood", directions, tmp_path / "erm.png", title="t",
                       reference=("erm (reference point)", 0.12, 0.08))
    skipped = plot_front(df, "iid", "ood", directions, tmp_path / "nan.png", title="t",
                         reference=("erm (reference point)", float("nan"), 0.08))
    assert not np.array_equal(imread(plain), imread(drawn))
    assert np.array_equal(imread(plain), imread(skipped))


def test_front_plot_draws_each_baseline_with_a_legend_entry_and_one_shape_per_method() -> None:
    """Baselines of one method share a marker shape, different methods differ; each has its own legend entry
    and annotation, and a non-finite baseline is left out."""
    from painvrl.analysis.plots import BASELINE_SHAPES, draw_front, marker_shapes

    df = pd.DataFrame({"iid": [0.30, 0.20, 0.15, 0.25], "ood": [0.10, 0.20, 0.12, 0.15]})
    markers = [("erm/ultragcn", 0.22, 0.09, "erm"), ("erm/vbpr", 0.18, 0.11, "erm"),
               ("invrl/vbpr", 0.19, 0.14, "invrl"), ("oracle/vbpr", 0.21, 0.16, "oracle"),
               ("erm/lightgcn", float("nan"), 0.1, "erm")]
    figure = draw_front(df, "iid", "ood", ["maximize", "maximize"], markers=markers)
    axes: Any = figure.axes[0]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend[-4:] == ["erm/ultragcn", "erm/vbpr", "invrl/vbpr", "oracle/vbpr"]
    assert "erm/lightgcn" not in legend
    assert {t.get_text() for t in axes.texts} >= {"erm/ultragcn", "erm/vbpr", "invrl/vbpr", "oracle/vbpr"}
    drawn: dict[str, Any] = {str(c.get_label()): c for c in axes.collections if str(c.get_label()).count("/") == 1}
    assert set(drawn) == {"erm/ultragcn", "erm/vbpr", "invrl/vbpr", "oracle/vbpr"}

    def shape(label: str) -> np.ndarray:
        return np.asarray(drawn[label].get_paths()[0].vertices)

    assert np.array_equal(shape("erm/ultragcn"), shape("erm/vbpr"))
    assert not np.array_equal(shape("erm/vbpr"), shape("invrl/vbpr"))
    assert not np.array_equal(shape("invrl/vbpr"), shape("oracle/vbpr"))
    assert not np.array_equal(shape("erm/vbpr"), shape("oracle/vbpr"))
    assert [tuple(drawn[k].get_offsets()[0]) for k in ("invrl/vbpr", "oracle/vbpr")] == [(0.19, 0.14), (0.21, 0.16)]
    colours = {tuple(c.get_facecolor()[0]) for c in drawn.values()}
    assert len(colours) == 4, "each baseline its own colour"
    assert marker_shapes(["erm", "erm", "invrl", "oracle"]) == {
        "erm": BASELINE_SHAPES[0], "invrl": BASELINE_SHAPES[1], "oracle": BASELINE_SHAPES[2]}
    # none of the baseline shapes is one the trials (o, D) or the reference point (X) use
    assert not {"o", "D", "X"} & set(BASELINE_SHAPES)
