"""The PaInvRL pipeline as a Ray Train TorchTrainer: N workers, gloo on CPU, NCCL on GPU.

Every worker runs the same ``run_pipeline`` as the in-process path with a TorchCollective (see collective.py for
the reduction design). Rank 0 attaches a checkpoint of the pipeline state at every evaluation; on a worker
failure Ray Train restarts the group (FailureConfig) and the pipeline resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.config import Config

logger = logging.getLogger(__name__)

CRASH_ENV = "PAINVRL_TEST_CRASH_ONCE"
"""Test hook: "PHASE:EVALUATION_INDEX:MARKER_FILE". The worker of rank 1 (or 0 when alone) exits the process
at that evaluation if MARKER_FILE does not exist yet (it creates it first), simulating a lost worker once."""


@dataclass
class RayTrainOutcome:
    metrics: dict[str, Any]
    mask: np.ndarray | None
    checkpoint_dir: Path | None


def _maybe_crash(phase: str, evaluation: int, rank: int, world_size: int) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    want_phase, want_eval, marker = spec.split(":", 2)
    victim = 1 if world_size > 1 else 0
    if rank == victim and phase == want_phase and evaluation == int(want_eval) and not Path(marker).exists():
        Path(marker).write_text(f"crashed at {phase}:{evaluation}\n")
        logger.warning("test hook: worker %d exits at %s evaluation %d", rank, phase, evaluation)
        os._exit(17)


def _worker_loop(loop_config: dict[str, Any]) -> None:
    import ray.train
    import torch

    from painvrl.config import config_from_dict
    from painvrl.data.registry import load_dataset
    from painvrl.study.trial import final_report
    from painvrl.training.checkpoint import load_pipeline_state, save_model, save_pipeline_state
    from painvrl.training.distributed import TorchCollective
    from painvrl.training.pipeline import run_pipeline

    config = config_from_dict(loop_config["config"])
    config.train.progress = False
    if config.scaling.use_gpu:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        config.train.device = str(device)
    else:
        config.train.device = "cpu"
        torch.set_num_threads(max(1, int(config.scaling.cpus_per_worker)))
    collective = TorchCollective()
    rank, world = collective.rank, collective.world_size
    data = load_dataset(config.dataset)

    resume_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume_state = load_pipeline_state(Path(folder))
        logger.info("rank %d resumes from checkpoint (phase %s)", rank, resume_state.get("phase"))

    evaluations: dict[str, int] = {}

    def reporter(update: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        phase = str(update.get("phase", ""))
        evaluations[phase] = evaluations.get(phase, 0) + 1
        metrics = {f"live.{k}": float(v) for k, v in update.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        metrics["live.phase"] = phase  # type: ignore[assignment]
        if state is not None and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_pipeline_state(state, Path(tmp))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        _maybe_crash(phase, evaluations[phase], rank, world)

    result = run_pipeline(config, data, collective, reporter, resume_state=resume_state)
    report = final_report(result.metrics, result.mask)
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "metrics.json").write_text(json.dumps(result.metrics, indent=2, default=float))
            if result.mask is not None:
                np.save(Path(tmp) / "mask.npy", np.asarray(result.mask, dtype=np.float32), allow_pickle=False)
            save_model(Path(tmp) / "checkpoint", result.model_state, result.model_meta)
            (Path(tmp) / "FINAL").write_text("complete\n")
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(report)


def fit_with_ray_train(config: Config, run_name: str, storage_path: str, forward_to_tune: bool = False
                       ) -> RayTrainOutcome:
    """Run the pipeline on ``config.scaling.num_workers`` Ray Train workers; return the final metrics.

    ``run_name`` must be unique per run (Ray Train RESUMES a folder whose name it finds in storage_path).
    ``forward_to_tune``: inside a Tune trial, stream every report to Tune with TuneReportCallback.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    scaling = config.scaling
    callbacks: list[Any] = []
    if forward_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": config.to_dict()},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, callbacks=callbacks or None,
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name} finished without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        folder_path = Path(folder)
        if not (folder_path / "FINAL").exists():
            raise RuntimeError(f"Ray Train run {run_name}: last checkpoint is not a final result")
        metrics = json.loads((folder_path / "metrics.json").read_text())
        mask = np.load(folder_path / "mask.npy", allow_pickle=False) if (folder_path / "mask.npy").exists() \
            else None
        keep = Path(tempfile.mkdtemp(prefix="painvrl-final-"))
        for name in ("metrics.json", "mask.npy"):
            if (folder_path / name).exists():
                shutil.copy2(folder_path / name, keep / name)
        shutil.copytree(folder_path / "checkpoint", keep / "checkpoint")
    return RayTrainOutcome(metrics, mask, keep)


def ensure_ray(config: Config) -> None:
    """Connect to RAY_ADDRESS when set, else start a small local Ray sized for the workers."""
    import ray

    if ray.is_initialized():
        return
    from painvrl.study.driver import RAY_TRAIN_FAST_ENV

    for key, value in RAY_TRAIN_FAST_ENV.items():
        os.environ.setdefault(key, value)
    env_vars = {k: os.environ[k] for k in RAY_TRAIN_FAST_ENV}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env={"env_vars": env_vars})
        return
    cpus = int(config.scaling.num_workers * config.scaling.cpus_per_worker + 1.999)
    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             runtime_env={"env_vars": env_vars})
