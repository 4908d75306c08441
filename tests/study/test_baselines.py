"""Study baselines as (method, backbone) pairs: trained once against a real MLflow sqlite store, cached by
method, config hash and data fingerprint, and compared with the front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from painvrl.study import tracking
from painvrl.study.baselines import (
    HYPERVOLUME_COLUMN,
    METHOD_TAG,
    MODEL_TAG,
    Baseline,
    baseline_markers,
    baseline_table,
    best_baseline_index,
    run_baselines,
    with_dominance,
)
from painvrl.study.shipped import CONFIG_DIR
from painvrl.study.spec import load_study

KEYS = ["val.iid.recall@20", "val.ood.recall@20"]
DIRECTIONS = ["maximize", "maximize"]


def _baseline(method: str, model: str, seed: int, iid: float, ood: float) -> Baseline:
    metrics = {tracking.metric_name(k): v for k, v in zip(KEYS, (iid, ood), strict=True)}
    metrics |= {"test.iid.recall_at_20": iid - 0.01, "test.ood.recall_at_20": ood - 0.01}
    return Baseline(method, model, seed, metrics, f"run-{method}-{model}-{seed}", cached=False)


def test_baseline_table_has_one_row_per_method_and_backbone() -> None:
    runs = [_baseline("erm", "vbpr", 0, 0.20, 0.10), _baseline("erm", "vbpr", 1, 0.22, 0.12),
            _baseline("invrl", "vbpr", 0, 0.18, 0.16), _baseline("erm", "ultragcn", 0, 0.25, 0.05)]
    table = baseline_table(runs, KEYS)
    assert list(table["baseline"]) == ["erm/vbpr", "invrl/vbpr", "erm/ultragcn"]
    assert list(table["method"]) == ["erm", "invrl", "erm"] and list(table["model"]) == ["vbpr", "vbpr", "ultragcn"]
    assert list(table["seeds"]) == [2, 1, 1]
    assert table["val.iid.recall@20"].iloc[0] == pytest.approx(0.21)
    assert table["test.ood.recall@20"].iloc[1] == pytest.approx(0.15)
    assert baseline_markers(table, *KEYS)[1] == ("invrl/vbpr", 0.18, 0.16, "invrl")
    # the best baseline (largest IID + OOD) is the default reference point
    assert best_baseline_index(table, KEYS, DIRECTIONS) == 1

    front = pd.DataFrame({"number": [3, 5], KEYS[0]: [0.30, 0.19], KEYS[1]: [0.11, 0.20]})
    compared = with_dominance(table, front, KEYS, DIRECTIONS)
    assert list(compared["dominated by"]) == ["3", "5", "3"]
    assert list(compared["dominates front"]) == ["none", "none", "none"]
    # the front's hypervolume over each baseline: over invrl/vbpr only trial 5 counts
    assert compared[HYPERVOLUME_COLUMN].iloc[1] == pytest.approx((0.19 - 0.18) * (0.20 - 0.16))
    assert compared[HYPERVOLUME_COLUMN].iloc[2] == pytest.approx(
        (0.30 - 0.25) * (0.11 - 0.05))  # trial 5 does not beat erm/ultragcn's IID


def _baseline_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([experiment], filter_string=f"tags.`{tracking.ROLE_TAG}` = 'baseline'")


def test_baselines_are_cached_per_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two methods over one backbone are two runs; rerunning trains nothing; a run is found by its method tag."""
    from painvrl.data.registry import load_dataset

    spec = load_study(CONFIG_DIR / "smoke.yaml", [
        f"storage_dir={tmp_path}", "base.train.epochs=1", "baselines=[vbpr, {method: oracle, model: vbpr}]"])
    data = load_dataset(spec.base_config().dataset)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, spec.name, tmp_path / "artifacts")
    parent = tracking.start_parent_run(uri, experiment, spec.name, {}, {})

    def run() -> list[Baseline]:
        return run_baselines(spec, data, data.fingerprint(), uri, experiment, parent)

    first = run()
    assert [(b.label, b.cached) for b in first] == [("erm/vbpr", False), ("oracle/vbpr", False)]
    assert "baselines: 2 trained, 0 found in MLflow" in capsys.readouterr().out
    logged = _baseline_runs(uri, experiment)
    assert sorted((r.data.tags[METHOD_TAG], r.data.tags[MODEL_TAG], r.info.run_name) for r in logged) == [
        ("erm", "vbpr", "baseline:erm/vbpr:s0"), ("oracle", "vbpr", "baseline:oracle/vbpr:s0")]
    assert all(r.info.status == "FINISHED" for r in logged)
    assert all(np.isfinite(b.metrics[tracking.metric_name(KEYS[0])]) for b in first)

    again = run()
    assert [(b.label, b.cached, b.run_id) for b in again] == [(b.label, True, b.run_id) for b in first]
    assert "baselines: 0 trained, 2 found in MLflow" in capsys.readouterr().out
    assert len(_baseline_runs(uri, experiment)) == 2, "rerunning trains nothing"

    # the cache is keyed on the method tag: the erm run under another method's tag is not erm's any more
    erm_run = next(b.run_id for b in first if b.method == "erm")
    MlflowClient(tracking_uri=uri).set_tag(erm_run, METHOD_TAG, "invrl")
    third = run()
    assert [(b.label, b.cached) for b in third] == [("erm/vbpr", False), ("oracle/vbpr", True)]
    assert len(_baseline_runs(uri, experiment)) == 3
