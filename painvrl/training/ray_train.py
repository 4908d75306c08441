"""The PaInvRL pipeline as a Ray Train TorchTrainer: N workers, gloo on CPU, NCCL on GPU.

Every worker runs the same ``run_pipeline`` as the in-process path with a TorchCollective (see collective.py for
the reduction design). Rank 0 attaches a checkpoint of the pipeline state at every evaluation; on a worker
failure Ray Train restarts the group (FailureConfig) and the pipeline resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.config import Config

logger = logging.getLogger(__name__)

TIMESTAMPS_FILE = "timestamps.json"


@dataclass
class RayTrainOutcome:
    metrics: dict[str, Any]
    mask: np.ndarray | None
    checkpoint_dir: Path | None
    timestamps: dict[str, float] = field(default_factory=dict)
    """Wall-clock (time.time) marks of the run: fit_start / fit_end on the driver; worker_start,
    pipeline_start, pipeline_end, final_report on rank 0 of the attempt that finished (benchmarks)."""
    worker_info: dict[str, Any] = field(default_factory=dict)
    """Rank 0's placement: device, process-group backend, world size, GPU name (smoke checks)."""


@dataclass(frozen=True)
class TrainerSettings:
    """What TorchTrainer is built with for a config (pure: testable without Ray resources or GPUs)."""

    backend: str
    """"nccl" with GPUs, "gloo" on CPU."""
    num_workers: int
    use_gpu: bool
    resources_per_worker: dict[str, float]
    max_failures: int


def trainer_settings(config: Config) -> TrainerSettings:
    scaling = config.scaling
    return TrainerSettings(backend="nccl" if scaling.use_gpu else "gloo", num_workers=int(scaling.num_workers),
                           use_gpu=bool(scaling.use_gpu),
                           resources_per_worker={"CPU": float(scaling.cpus_per_worker)},
                           max_failures=int(scaling.max_failures))


def select_worker_device(use_gpu: bool, cpus_per_worker: float) -> str:
    """Device of this Ray Train worker: its assigned GPU (made current, as NCCL collectives require), else
    "cpu" with torch's intra-op threads limited to the CPUs the worker reserved."""
    import torch

    if use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        return str(device)
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    return "cpu"


def _worker_info(config: Config) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    device = config.train.device
    return {"device": device, "backend": str(dist.get_backend()), "world_size": dist.get_world_size(),
            "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None}


def _worker_loop(loop_config: dict[str, Any]) -> None:
    worker_start = time.time()
    import ray.train

    from painvrl.config import config_from_dict
    from painvrl.data.registry import load_dataset
    from painvrl.distributed.torch_collective import TorchCollective
    from painvrl.training.checkpoint import load_pipeline_state, save_model, save_pipeline_state
    from painvrl.training.pipeline import run_pipeline
    from painvrl.training.results import final_report

    config = config_from_dict(loop_config["config"])
    config.train.progress = False
    config.train.device = select_worker_device(config.scaling.use_gpu, config.scaling.cpus_per_worker)
    collective = TorchCollective()
    rank = collective.rank
    data = load_dataset(config.dataset)

    resume_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume_state = load_pipeline_state(Path(folder))
        logger.info("rank %d resumes from checkpoint (phase %s)", rank, resume_state.get("phase"))

    def reporter(update: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        phase = str(update.get("phase", ""))
        metrics = {f"live.{k}": float(v) for k, v in update.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        metrics["live.phase"] = phase  # type: ignore[assignment]
        if state is not None and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_pipeline_state(state, Path(tmp))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)

    pipeline_start = time.time()
    result = run_pipeline(config, data, collective, reporter, checkpoints=True, resume_state=resume_state)
    pipeline_end = time.time()
    report = final_report(result.metrics, result.mask)
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            stamps = {"worker_start": worker_start, "pipeline_start": pipeline_start, "pipeline_end": pipeline_end,
                      "final_report": time.time()}
            (Path(tmp) / TIMESTAMPS_FILE).write_text(json.dumps({**stamps, "info": _worker_info(config)}))
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
    fit_start = time.time()
    trainer = build_trainer(config, run_name, storage_path, forward_to_tune)
    result = trainer.fit()
    fit_end = time.time()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name} finished without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        folder_path = Path(folder)
        if not (folder_path / "FINAL").exists():
            raise RuntimeError(f"Ray Train run {run_name}: last checkpoint is not a final result")
        metrics = json.loads((folder_path / "metrics.json").read_text())
        stamps_file = folder_path / TIMESTAMPS_FILE
        stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else {}
        info = stamps.pop("info", {})
        mask = np.load(folder_path / "mask.npy", allow_pickle=False) if (folder_path / "mask.npy").exists() \
            else None
        keep = Path(tempfile.mkdtemp(prefix="painvrl-final-"))
        for name in ("metrics.json", "mask.npy"):
            if (folder_path / name).exists():
                shutil.copy2(folder_path / name, keep / name)
        shutil.copytree(folder_path / "checkpoint", keep / "checkpoint")
    return RayTrainOutcome(metrics, mask, keep, {"fit_start": fit_start, **stamps, "fit_end": fit_end}, info)


def build_trainer(config: Config, run_name: str, storage_path: str, forward_to_tune: bool = False) -> Any:
    """The TorchTrainer of :func:`fit_with_ray_train` (not started)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    settings = trainer_settings(config)
    callbacks: list[Any] = []
    if forward_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    return TorchTrainer(
        _worker_loop,
        train_loop_config={"config": config.to_dict()},
        torch_config=TorchConfig(backend=settings.backend),
        scaling_config=ray.train.ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.use_gpu,
                                               resources_per_worker=settings.resources_per_worker),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, callbacks=callbacks or None,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )


def ensure_ray(config: Config) -> None:
    """Connect to RAY_ADDRESS when set, else start a small local Ray sized for the workers."""
    from painvrl.training.ray_runtime import start_ray

    start_ray(int(config.scaling.num_workers * config.scaling.cpus_per_worker + 1.999))
