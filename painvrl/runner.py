"""``train(config, output_dir)``: one run, written atomically into a run folder.

Layout of a finished run folder (the contract of ``painvrl train`` and ``painvrl.load_run``)::

    DIR/metrics.json       see docs/metrics.md
    DIR/config.yaml        the fully resolved config
    DIR/checkpoint/        model.pt (state_dict of the selected final model) + meta.json (encoder spec)
    DIR/mask.npy           float32 [d] mask, when the method has one (painvrl, invrl, oracle)

Everything is built in a hidden sibling folder ``.DIR.tmp-XXXX`` and renamed into place at the end, so a
failure leaves no partial output.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.config import Config, dump_config
from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
MASK_FILE = "mask.npy"


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing output folder unless ``overwrite``; refuse a file."""
    if output_dir.exists() and not output_dir.is_dir():
        raise PainvrlInputError(f"--output {output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise PainvrlInputError(f"--output {output_dir}: folder exists and is not empty (use --overwrite)")


def _train_in_process(config: Config, folder: Path) -> dict[str, Any]:
    from painvrl.data.registry import load_dataset
    from painvrl.training.checkpoint import save_model
    from painvrl.training.pipeline import run_pipeline
    from painvrl.training.results import write_metrics

    data = load_dataset(config.dataset)
    logger.info("dataset %s: %d users, %d items, %d train positives", data.name, data.n_users, data.n_items,
                len(data.train))
    result = run_pipeline(config, data)
    write_metrics(result.metrics, folder / METRICS_FILE)
    save_model(folder / CHECKPOINT_DIR, result.model_state, result.model_meta)
    if result.mask is not None:
        np.save(folder / MASK_FILE, np.asarray(result.mask, dtype=np.float32), allow_pickle=False)
    return result.metrics


def _train_with_ray(config: Config, folder: Path) -> dict[str, Any]:
    """Ray Train path (scaling.num_workers >= 1): the same files, written from rank 0's final checkpoint.

    Connects to RAY_ADDRESS when set, else starts a local Ray sized for the workers. Ray Train's own run folder
    (per-evaluation checkpoints for failure recovery) lives in a unique folder beside the run and is removed
    once the final result is copied.
    """
    import uuid

    from painvrl.training.ray_train import ensure_ray, fit_with_ray_train
    from painvrl.training.results import write_metrics

    ensure_ray(config)
    storage = folder.parent / f".{folder.name}.ray-train"
    try:
        outcome = fit_with_ray_train(config, run_name=f"painvrl-{uuid.uuid4().hex[:12]}",
                                     storage_path=str(storage))
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    assert outcome.checkpoint_dir is not None
    write_metrics(outcome.metrics, folder / METRICS_FILE)
    shutil.copytree(outcome.checkpoint_dir / "checkpoint", folder / CHECKPOINT_DIR)
    if outcome.mask is not None:
        np.save(folder / MASK_FILE, np.asarray(outcome.mask, dtype=np.float32), allow_pickle=False)
    shutil.rmtree(outcome.checkpoint_dir, ignore_errors=True)
    return outcome.metrics


def train(config: Config, output_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Train ``config.method`` and write the run folder atomically; returns the metrics dict. A config the
    registries or the backbone refuse fails here, before any data is read or Ray is started."""
    from painvrl.training.checks import resolve_run

    resolve_run(config)
    output_dir = Path(output_dir).expanduser().resolve()
    check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp creates 0700; a run folder gets the usual permissions
    try:
        dump_config(config, tmp / CONFIG_FILE)
        if config.scaling.num_workers == 0:
            metrics = _train_in_process(config, tmp)
        else:
            metrics = _train_with_ray(config, tmp)
        if output_dir.exists():
            check_output_dir(output_dir, overwrite)  # re-check: something may have appeared meanwhile
            old = output_dir.with_name(f".{output_dir.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            output_dir.rename(old)
            tmp.rename(output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("run written to %s", output_dir)
    return metrics
