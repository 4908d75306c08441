"""The study's baselines: every (method, backbone) pair of the study field ``baselines``, once per seed, trained
before the search on the same data and logged as tagged runs of the study's MLflow experiment. A baseline is
labelled ``method/model`` (``erm/ultragcn``, ``invrl/vbpr``).

A baseline run is cached by its method, its run config's hash and the data's fingerprint (MLflow tags):
rerunning or resuming the study finds it and trains nothing. The baselines' validation points are drawn on the
front plot (one marker shape per method), compared with the front trials ("dominated by" / "dominates"), and
the best of them is the default hypervolume reference point, so a front that beats no baseline has
hypervolume 0.
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

from painvrl.errors import PainvrlInputError
from painvrl.study.front import _to_minimisation, dominates, hypervolume
from painvrl.study.spec import BaselineSpec, StudySpec

logger = logging.getLogger(__name__)

BASELINE_ROLE = "baseline"
CONFIG_HASH_TAG = "painvrl.config_hash"
FINGERPRINT_TAG = "painvrl.data_fingerprint"
METHOD_TAG = "painvrl.method"
MODEL_TAG = "painvrl.model"
SEED_TAG = "painvrl.seed"


@dataclass(frozen=True)
class Baseline:
    """One baseline run: method, backbone, seed, its flattened metrics (val and test) and its MLflow run."""

    method: str
    model: str
    seed: int
    metrics: dict[str, float]
    run_id: str
    cached: bool

    @property
    def label(self) -> str:
        return BaselineSpec(self.model, self.method).label


def baseline_seeds(spec: StudySpec) -> list[int]:
    return list(spec.baseline_seeds) if spec.baseline_seeds else [int(spec.base_config().train.seed)]


def baseline_config(spec: StudySpec, baseline: BaselineSpec, seed: int) -> Any:
    """The run config of one baseline: the study's base with ``baseline.method`` over ``baseline.model`` at
    ``seed``, in-process."""
    from painvrl.study.space import trial_config

    config = trial_config(spec, {"method": baseline.method, "model.name": baseline.model, "train.seed": seed})
    config.scaling.num_workers = 0
    return config


def check_baselines(spec: StudySpec) -> None:
    """Every baseline's run config passes the checks a run makes before training (registered names, the
    backbone's settings, what the method needs of the data's kind): a refused baseline fails the study before
    anything trains, the error naming its entry."""
    from painvrl.training.checks import resolve_run

    for i, baseline in enumerate(spec.baselines):
        try:
            resolve_run(baseline_config(spec, baseline, baseline_seeds(spec)[0]))
        except PainvrlInputError as exc:
            raise PainvrlInputError(f"study config field 'baselines[{i}]' ({baseline.label}): {exc}") from exc


def log_baseline(tracking_uri: str, experiment_id: str, parent_run_id: str, study: str, baseline: BaselineSpec,
                 seed: int, tags: dict[str, str], flat: dict[str, float], metrics: dict[str, Any]) -> str:
    """Log one trained baseline as a finished child run of the study: its cache ``tags`` with the study's,
    the flattened metrics ``flat`` and metrics.json; returns the run id."""
    from mlflow.entities import Metric

    from painvrl.study import tracking

    client = tracking._client(tracking_uri)
    run = client.create_run(experiment_id, run_name=f"baseline:{baseline.label}:s{seed}", tags={
        **tags, tracking.PARENT_TAG: parent_run_id, tracking.STUDY_TAG: study, METHOD_TAG: baseline.method,
        MODEL_TAG: baseline.model, SEED_TAG: str(seed)})
    run_id = str(run.info.run_id)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in flat.items()])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.json"
        path.write_text(json.dumps(metrics, indent=2, default=str))
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id


def run_baselines(spec: StudySpec, data: Any, fingerprint: str, tracking_uri: str, experiment_id: str,
                  parent_run_id: str) -> list[Baseline]:
    """Every (method, backbone, seed) baseline of the study: found in MLflow by method, config hash and data
    fingerprint, or trained now (in the driver process) and logged."""
    from tqdm.auto import tqdm

    from painvrl.distributed.collective import LocalCollective
    from painvrl.study import tracking
    from painvrl.training.pipeline import run_pipeline
    from painvrl.training.results import flatten_metrics

    client = tracking._client(tracking_uri)
    out: list[Baseline] = []
    todo = [(baseline, seed) for baseline in spec.baselines for seed in baseline_seeds(spec)]
    bar = tqdm(todo, desc="baselines", unit="run", leave=False, disable=None)
    for baseline, seed in bar:
        bar.set_postfix_str(f"{baseline.label} seed {seed}")
        config = baseline_config(spec, baseline, seed)
        tags = {tracking.ROLE_TAG: BASELINE_ROLE, METHOD_TAG: baseline.method,
                CONFIG_HASH_TAG: config.config_hash(), FINGERPRINT_TAG: fingerprint}
        existing = tracking.find_run(tracking_uri, experiment_id, tags)
        if existing is not None:
            logged = dict(client.get_run(existing).data.metrics)
            if all(tracking.metric_name(k) in logged for k in spec.metric_keys()):
                out.append(Baseline(baseline.method, baseline.model, seed, logged, existing, cached=True))
                continue
        logger.info("training the baseline %s (seed %d)", baseline.label, seed)
        metrics = run_pipeline(config, data, LocalCollective(), None).metrics
        flat = {tracking.metric_name(k): float(v) for k, v in flatten_metrics(metrics).items()
                if np.isfinite(v)}
        run_id = log_baseline(tracking_uri, experiment_id, parent_run_id, spec.name, baseline, seed, tags, flat,
                              metrics)
        out.append(Baseline(baseline.method, baseline.model, seed, flat, run_id, cached=False))
    bar.close()
    cached = sum(b.cached for b in out)
    print(f"baselines: {len(out) - cached} trained, {cached} found in MLflow (same method, config and data)",
          flush=True)
    return out


def baseline_table(baselines: Sequence[Baseline], keys: Sequence[str]) -> pd.DataFrame:
    """One row per (method, backbone), labelled ``method/model``: the mean over seeds of every objective
    (validation) and of the same metric on test (``test.`` in place of ``val.``), with the number of seeds."""
    from painvrl.study.tracking import metric_name

    rows = []
    for method, model in dict.fromkeys((b.method, b.model) for b in baselines):
        runs = [b for b in baselines if (b.method, b.model) == (method, model)]
        row: dict[str, Any] = {"baseline": runs[0].label, "method": method, "model": model, "seeds": len(runs)}
        for key in keys:
            for name in (key, test_key(key)):
                values = [b.metrics.get(metric_name(name), np.nan) for b in runs]
                row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["baseline", "method", "model", "seeds"])


def baseline_markers(table: pd.DataFrame | None, x: str, y: str) -> list[tuple[str, float, float, str]]:
    """(label, x, y, method) of every baseline row, for :func:`painvrl.analysis.plots.plot_front`'s markers
    (one marker shape per method)."""
    if table is None or table.empty:
        return []
    return [(str(row["baseline"]), float(row[x]), float(row[y]), str(row["method"]))
            for _, row in table.iterrows()]


def test_key(key: str) -> str:
    """The test-set twin of a validation metric key (``val.ood.recall@20`` -> ``test.ood.recall@20``)."""
    return "test." + key.split(".", 1)[1] if key.startswith("val.") else key


def best_baseline_index(table: pd.DataFrame, keys: Sequence[str], directions: Sequence[str]) -> int | None:
    """Position in ``table`` of the best baseline: the one whose objectives, signed by direction, have the
    largest sum (the one furthest along the diagonal of objective space; ties: the first); None when no row has
    every objective."""
    if table.empty:
        return None
    points = table[list(keys)].to_numpy(dtype=float)
    finite = np.all(np.isfinite(points), axis=1)
    if not finite.any():
        return None
    losses, _ = _to_minimisation(np.nan_to_num(points), directions)
    scores = np.where(finite, -losses.sum(axis=1), -np.inf)
    return int(np.argmax(scores))


def best_baseline_point(table: pd.DataFrame, keys: Sequence[str], directions: Sequence[str]) -> list[float] | None:
    """The default reference point: the objectives of the best baseline (:func:`best_baseline_index`)."""
    index = best_baseline_index(table, keys, directions)
    if index is None:
        return None
    return [float(v) for v in table[list(keys)].to_numpy(dtype=float)[index]]


HYPERVOLUME_COLUMN = "front hypervolume over it"
"""Column of :func:`with_dominance`: the hypervolume of the front with the baseline's point as reference (at
the best baseline, the study's hypervolume when it is the reference point)."""


def with_dominance(table: pd.DataFrame, front: pd.DataFrame, keys: Sequence[str],
                   directions: Sequence[str], id_column: str = "number") -> pd.DataFrame:
    """``table`` (baselines) with three columns: the front trials that dominate each baseline on the validation
    objectives ("dominated by"), those it dominates ("dominates front"), and the hypervolume of the front with
    the baseline's point as reference (:data:`HYPERVOLUME_COLUMN`; NaN beyond 3 objectives or without every
    objective)."""
    out = table.copy()
    points = front[list(keys)].to_numpy(dtype=float) if len(front) else np.zeros((0, len(keys)))
    ids = front[id_column].tolist() if len(front) else []
    by, over, volumes = [], [], []
    for row in table[list(keys)].to_numpy(dtype=float):
        by.append(", ".join(str(i) for i, p in zip(ids, points, strict=True) if dominates(p, row, directions))
                  or "none")
        over.append(", ".join(str(i) for i, p in zip(ids, points, strict=True) if dominates(row, p, directions))
                    or "none")
        volumes.append(float(hypervolume(points, row, directions)) if 1 <= len(keys) <= 3
                       and np.all(np.isfinite(row)) else np.nan)
    out["dominated by"] = by
    out["dominates front"] = over
    out[HYPERVOLUME_COLUMN] = volumes
    return out
