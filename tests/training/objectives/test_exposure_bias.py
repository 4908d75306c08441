"""The popularity methods on the synthetic exposure scenario, whose answer is known: training clicks follow an
exposure-biased policy (a front page and a Zipf tail), the OOD test uniform exposure, and erm trained on
uniform-exposure clicks of the same size is the reference (docs/data.md, docs/results.md).

- PDA closes part of the gap between erm and that reference. Measured at the scenario's default size over
  seeds 0, 1, 2: OOD Recall@20 erm 0.2426, pda 0.2541, uniform-exposure erm 0.2773 (gap closed 0.33 +- 0.10).
  Tolerance: over seeds 0 and 1, pda's OOD recall beats erm's on average by at least 0.003 and stays below the
  reference.
- IPS reweights the training clicks towards uniform exposure: the weighted share of front-page clicks falls
  from 0.96 towards the front page's share of the items, the more as the clip is lowered, at the cost of the
  effective sample (which is why IPS does not close the gap here; docs/results.md).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from painvrl.config import load_config
from painvrl.data.registry import load_dataset
from painvrl.training.objectives.popularity import ips_weights
from painvrl.training.pipeline import run_pipeline

SCENARIO = ["dataset.synthetic.scenario=exposure", "dataset.ood=synthetic", "model.name=ultragcn",
            "train.progress=false"]


def _ood(seed: int, *overrides: str) -> float:
    config = load_config(None, [*SCENARIO, f"dataset.seed={seed}", f"train.seed={seed}", *overrides])
    return float(run_pipeline(config, load_dataset(config.dataset)).metrics["test"]["ood"]["recall@20"])


def test_pda_closes_part_of_the_exposure_gap() -> None:
    logging.disable(logging.WARNING)
    try:
        rows = {name: [_ood(seed, *overrides) for seed in (0, 1)] for name, overrides in {
            "erm": ["method=erm"], "pda": ["method=pda"],
            "uniform": ["method=erm", "dataset.synthetic.exposure_strength=0"]}.items()}
    finally:
        logging.disable(logging.NOTSET)
    erm, pda, uniform = (float(np.mean(rows[name])) for name in ("erm", "pda", "uniform"))
    assert uniform > erm + 0.02, rows  # the scenario has a gap to close
    assert pda >= erm + 0.003 and pda < uniform, rows


@pytest.mark.parametrize(("clip", "most"), [(0.05, 0.7), (0.005, 0.35)])
def test_ips_moves_the_weighted_clicks_towards_uniform_exposure(clip: float, most: float) -> None:
    config = load_config(None, [*SCENARIO, "ips.propensity=known", f"ips.clip={clip}"])
    data = load_dataset(config.dataset)
    assert data.ground_truth is not None
    front = data.features["m0"][:, data.info["exposure_columns"]["front_page"]]
    on_front = (front > front.mean())[data.train[:, 1]]
    weights = ips_weights(data.train, data.n_items, config.ips, data.ground_truth.item_propensity)
    assert on_front.mean() > 0.9
    assert weights[on_front].sum() / weights.sum() < most
