"""The study's baselines: erm over every backbone named in the study field ``baselines``, once per seed, trained
before the search on the same data and logged as tagged runs of the study's MLflow experiment.

A baseline run is cached by its run config's hash and the data's fingerprint (MLflow tags): rerunning or
resuming the study finds it and trains nothing. The baselines' validation points are drawn on the front plot,
compared with the front trials ("dominated by" / "dominates"), and the best of them is the default hypervolume
reference point, so a front that beats no baseline has hypervolume 0.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from painvrl.study.front import _to_minimisation, dominates
from painvrl.study.spec import StudySpec

logger = logging.getLogger(__name__)

BASELINE_ROLE = "baseline"
CONFIG_HASH_TAG = "painvrl.config_hash"
FINGERPRINT_TAG = "painvrl.data_fingerprint"
MODEL_TAG = "painvrl.model"
SEED_TAG = "painvrl.seed"


@dataclass(frozen=True)
class Baseline:
    """One erm baseline run: backbone, seed, its flattened metrics (val and test) and its MLflow run."""

    model: str
    seed: int
    metrics: dict[str, float]
    run_id: str
    cached: bool


def baseline_seeds(spec: StudySpec) -> list[int]:
    return list(spec.baseline_seeds) if spec.baseline_seeds else [int(spec.base_config().train.seed)]


def baseline_config(spec: StudySpec, model: str, seed: int) -> Any:
    """The run config of one baseline: the study's base with erm over ``model`` at ``seed``, in-process."""
    from painvrl.study.space import trial_config

    config = trial_config(spec, {"method": "erm", "model.name": model, "train.seed": seed})
    config.scaling.num_workers = 0
    return config


def run_baselines(spec: StudySpec, data: Any, fingerprint: str, tracking_uri: str, experiment_id: str,
                  parent_run_id: str) -> list[Baseline]:
    """Every (backbone, seed) baseline of the study: found in MLflow by config hash and data fingerprint, or
    trained now (erm, in the driver process) and logged."""
    from mlflow.entities import Metric
    from tqdm.auto import tqdm

    from painvrl.distributed.collective import LocalCollective
    from painvrl.study import tracking
    from painvrl.training.pipeline import run_pipeline
    from painvrl.training.results import flatten_metrics

    client = tracking._client(tracking_uri)
    out: list[Baseline] = []
    todo = [(model, seed) for model in spec.baselines for seed in baseline_seeds(spec)]
    bar = tqdm(todo, desc="erm baselines", unit="run", leave=False, disable=None)
    for model, seed in bar:
        bar.set_postfix_str(f"{model} seed {seed}")
        config = baseline_config(spec, model, seed)
        tags = {tracking.ROLE_TAG: BASELINE_ROLE, CONFIG_HASH_TAG: config.config_hash(),
                FINGERPRINT_TAG: fingerprint}
        existing = tracking.find_run(tracking_uri, experiment_id, tags)
        if existing is not None:
            logged = dict(client.get_run(existing).data.metrics)
            if all(tracking.metric_name(k) in logged for k in spec.metric_keys()):
                out.append(Baseline(model, seed, logged, existing, cached=True))
                continue
        logger.info("training the erm baseline %s (seed %d)", model, seed)
        metrics = run_pipeline(config, data, LocalCollective(), None).metrics
        flat = {tracking.metric_name(k): float(v) for k, v in flatten_metrics(metrics).items()
                if np.isfinite(v)}
        run = client.create_run(experiment_id, run_name=f"baseline:{model}:s{seed}", tags={
            **tags, tracking.PARENT_TAG: parent_run_id, tracking.STUDY_TAG: spec.name, MODEL_TAG: model,
            SEED_TAG: str(seed)})
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in flat.items()])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "metrics.json"
            path.write_text(json.dumps(metrics, indent=2, default=str))
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id)
        out.append(Baseline(model, seed, flat, run_id, cached=False))
    bar.close()
    cached = sum(b.cached for b in out)
    print(f"erm baselines: {len(out) - cached} trained, {cached} found in MLflow (same config and data)", flush=True)
    return out


def baseline_table(baselines: Sequence[Baseline], keys: Sequence[str]) -> pd.DataFrame:
    """One row per backbone: the mean over seeds of every objective (validation) and of the same metric on
    test (``test.`` in place of ``val.``), with the number of seeds."""
    from painvrl.study.tracking import metric_name

    rows = []
    for model in dict.fromkeys(b.model for b in baselines):
        runs = [b for b in baselines if b.model == model]
        row: dict[str, Any] = {"baseline": f"erm {model}", "seeds": len(runs)}
        for key in keys:
            for name in (key, test_key(key)):
                values = [b.metrics.get(metric_name(name), np.nan) for b in runs]
                row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_markers(table: pd.DataFrame | None, x: str, y: str) -> list[tuple[str, float, float]]:
    """(label, x, y) of every baseline row, for :func:`painvrl.analysis.plots.plot_front`'s markers."""
    if table is None or table.empty:
        return []
    return [(str(row["baseline"]), float(row[x]), float(row[y])) for _, row in table.iterrows()]


def test_key(key: str) -> str:
    """The test-set twin of a validation metric key (``val.ood.recall@20`` -> ``test.ood.recall@20``)."""
    return "test." + key.split(".", 1)[1] if key.startswith("val.") else key


def best_baseline_point(table: pd.DataFrame, keys: Sequence[str], directions: Sequence[str]) -> list[float] | None:
    """The reference point: the baseline whose objectives, signed by direction, have the largest sum (the one
    furthest along the diagonal of objective space; ties: the first)."""
    if table.empty:
        return None
    points = table[list(keys)].to_numpy(dtype=float)
    finite = np.all(np.isfinite(points), axis=1)
    if not finite.any():
        return None
    losses, _ = _to_minimisation(np.nan_to_num(points), directions)
    scores = np.where(finite, -losses.sum(axis=1), -np.inf)
    return [float(v) for v in points[int(np.argmax(scores))]]


def with_dominance(table: pd.DataFrame, front: pd.DataFrame, keys: Sequence[str],
                   directions: Sequence[str], id_column: str = "number") -> pd.DataFrame:
    """``table`` (baselines) with two columns: the front trials that dominate each baseline on the validation
    objectives ("dominated by"), and those it dominates ("dominates front")."""
    out = table.copy()
    points = front[list(keys)].to_numpy(dtype=float) if len(front) else np.zeros((0, len(keys)))
    ids = front[id_column].tolist() if len(front) else []
    by, over = [], []
    for row in table[list(keys)].to_numpy(dtype=float):
        by.append(", ".join(str(i) for i, p in zip(ids, points, strict=True) if dominates(p, row, directions))
                  or "none")
        over.append(", ".join(str(i) for i, p in zip(ids, points, strict=True) if dominates(row, p, directions))
                    or "none")
    out["dominated by"] = by
    out["dominates front"] = over
    return out
