"""The Ray Train path (painvrl/training/ray_train.py) on a real local Ray cluster (loopback, real processes).

One small Ray cluster is shared by the module (3 CPUs: two 1-CPU workers plus the trainer's controller). The
reference for every check is the in-process pipeline (LocalCollective) on the same tiny synthetic painvrl
config: two Ray Train workers with half of every global batch each must reproduce it (test/val metrics to
1e-6, identical selection epoch), also after a worker is lost and the run resumes from its checkpoint.

The module installs a plugin package (plugin_package.py) whose backbones reach the workers through the
``painvrl.models`` entry points: the lost worker is its ``crash_once`` backbone (UltraGCN that exits the
process of rank 1 once, at a given epoch), and its ``plugin_mf`` backbone trains on two workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plugin_package import installed_plugin

from painvrl.config import Config, load_config
from painvrl.training.ray_train import (
    build_trainer,
    fit_with_ray_train,
    select_worker_device,
    trainer_settings,
)

TINY = ["method=painvrl", "dataset.synthetic.n_users=60", "dataset.synthetic.n_items=80",
        "dataset.synthetic.interactions_per_user=8",
        "dataset.synthetic.modality_dims=[4,4]", "model.k_id=4", "model.k_f=4", "model.n_negatives=3",
        "model.negative_pool=16", "train.epochs=3", "train.batch_size=64", "train.patience=10",
        "train.progress=false", "train.device=cpu", "painvrl.pretrain_epochs=2", "painvrl.rounds=1",
        "environments.max_iters=1", "environments.env_epochs=1", "mask.epochs=1", "mask.steps_per_epoch=2",
        "mask.warmup_steps=0"]


def _config(*extra: str) -> Config:
    return load_config(None, [*TINY, *extra])


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test plugin package, installed for this module (before its Ray cluster starts)."""
    with installed_plugin(tmp_path_factory.mktemp("plugin")):
        yield


@pytest.fixture(scope="module")
def ray_address(plugin: None) -> Iterator[str]:
    """A local Ray cluster for this module; its GCS address lets a CLI subprocess join it (RAY_ADDRESS)."""
    import ray

    from painvrl.training.ray_runtime import RAY_TRAIN_FAST_ENV

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    for key, value in RAY_TRAIN_FAST_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=3, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             runtime_env={"env_vars": {k: os.environ[k] for k in RAY_TRAIN_FAST_ENV}})
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """metrics.json of the in-process run (one process, LocalCollective) of the tiny painvrl config."""
    from painvrl.data.registry import load_dataset
    from painvrl.training.pipeline import run_pipeline

    config = _config()
    result = run_pipeline(config, load_dataset(config.dataset))
    assert result.mask is not None
    return {"metrics": result.metrics, "mask": result.mask}


def _assert_same_run(metrics: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same selected epoch and value, same val/test metrics (all sections) to 1e-6, same env sizes."""
    assert metrics["selection"]["epoch"] == expected["selection"]["epoch"]
    assert metrics["selection"]["value"] == pytest.approx(expected["selection"]["value"], rel=1e-6, abs=1e-9)
    assert metrics["environments"]["sizes"] == expected["environments"]["sizes"]
    for split in ("val", "test"):
        for section in ("iid", "worst_env", "spread"):
            got, want = metrics[split][section], expected[split][section]
            assert set(got) == set(want), (split, section)
            for key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (split, section, key)
    phases = [(h["phase"], h["epoch"]) for h in metrics["history"]]
    assert phases == [(h["phase"], h["epoch"]) for h in expected["history"]]
    for got_h, want_h in zip(metrics["history"], expected["history"], strict=True):
        assert got_h["loss"] == pytest.approx(want_h["loss"], rel=1e-5), got_h["phase"]


def _crash_once(marker: Path, crash_at: int) -> list[str]:
    """The plugin's ``crash_once`` backbone (UltraGCN's computation): rank 1 exits its process once, when it
    starts its ``crash_at``-th training epoch."""
    return ["model.name=crash_once", f"model.settings.crash_once.marker={marker}",
            f"model.settings.crash_once.crash_at={crash_at}"]


def test_two_workers_resume_after_a_lost_worker_to_the_uninterrupted_result(
        ray_address: str, reference: dict[str, Any], tmp_path: Path) -> None:
    """Rank 1 exits its process once, after the 2nd evaluation of the final phase (its 5th epoch: 2 of
    pretraining, then the final model's 3rd); with max_failures=1 Ray Train restarts the group, rank 0's last
    checkpoint (the learned mask, the final model at that evaluation) is restored, and the run ends exactly
    like an uninterrupted one (the in-process reference; test_cli_two_workers_end_to_end shows an
    uninterrupted 2-worker run equals it too)."""
    marker = tmp_path / "crashed"
    config = _config("scaling.num_workers=2", "scaling.max_failures=1", *_crash_once(marker, 5))
    outcome = fit_with_ray_train(config, run_name=f"fault-{uuid.uuid4().hex[:8]}",
                                 storage_path=str(tmp_path / "storage"))
    assert marker.read_text().startswith("crashed at epoch start 5 of rank 1"), "the worker never crashed"
    final = [h["epoch"] for h in outcome.metrics["history"] if h["phase"] == "final"]
    assert final == [0, 1, 2], "the resumed run repeats or skips an evaluation"
    _assert_same_run(outcome.metrics, reference["metrics"])
    assert outcome.mask is not None
    np.testing.assert_allclose(outcome.mask, reference["mask"], rtol=1e-5, atol=1e-6)
    stamps = outcome.timestamps
    assert stamps["fit_start"] <= stamps["worker_start"] <= stamps["pipeline_start"] <= stamps["pipeline_end"]
    assert stamps["pipeline_end"] <= stamps["final_report"] <= stamps["fit_end"]
    assert outcome.checkpoint_dir is not None and (outcome.checkpoint_dir / "checkpoint" / "model.pt").is_file()
    assert outcome.worker_info == {"device": "cpu", "backend": "gloo", "world_size": 2, "gpu": None}


def test_lost_worker_without_retries_fails_the_run(ray_address: str, tmp_path: Path) -> None:
    """The same crash with max_failures=0 is an error (so the test above really exercises the recovery)."""
    marker = tmp_path / "crashed"
    config = _config("method=erm", "scaling.num_workers=2", "scaling.max_failures=0", "train.epochs=2",
                     *_crash_once(marker, 2))
    with pytest.raises(Exception):  # noqa: B017 - Ray's worker-group error type differs between versions
        fit_with_ray_train(config, run_name=f"nofault-{uuid.uuid4().hex[:8]}",
                           storage_path=str(tmp_path / "storage"))
    assert marker.exists()


def test_a_plugin_backbone_trains_on_two_workers(ray_address: str, tmp_path: Path) -> None:
    """``plugin_mf`` exists only as an entry point of the installed plugin package: each Ray Train worker looks
    ``model.name`` up in its own process and finds it there."""
    config = _config("method=erm", "model.name=plugin_mf", "scaling.num_workers=2", "train.epochs=2")
    outcome = fit_with_ray_train(config, run_name=f"plugin-{uuid.uuid4().hex[:8]}",
                                 storage_path=str(tmp_path / "storage"))
    assert outcome.worker_info["world_size"] == 2
    assert [h["epoch"] for h in outcome.metrics["history"] if h["phase"] == "train"] == [0, 1]
    assert 0.0 < outcome.metrics["test"]["iid"]["recall@20"] <= 1.0
    assert outcome.checkpoint_dir is not None
    meta = json.loads((outcome.checkpoint_dir / "checkpoint" / "meta.json").read_text())
    assert meta["model"] == "plugin_mf"


def test_cli_two_workers_end_to_end(ray_address: str, reference: dict[str, Any], tmp_path: Path) -> None:
    """`painvrl train --set scaling.num_workers=2` as a subprocess joining the module's cluster: the run
    folder has every file, equals the in-process run, and load_run scores and recommends from it."""
    from painvrl.serving import load_run

    out = tmp_path / "run"
    args = [a for item in TINY for a in ("--set", item)]
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RAY_USAGE_STATS_ENABLED": "0"}
    cli = Path(sys.executable).with_name("painvrl")
    done = subprocess.run([str(cli), "train", *args, "--set", "scaling.num_workers=2", "--output", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("metrics.json", "config.yaml", "mask.npy", "checkpoint/model.pt", "checkpoint/meta.json"):
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".run.*")), "temporary / Ray Train storage folders left behind"
    metrics = json.loads((out / "metrics.json").read_text())
    _assert_same_run(metrics, reference["metrics"])
    mask = np.load(out / "mask.npy", allow_pickle=False)
    assert mask.dtype == np.float32
    np.testing.assert_allclose(mask, reference["mask"], rtol=1e-5, atol=1e-6)
    run = load_run(out)
    assert run.config.scaling.num_workers == 2
    recs = run.recommend([0, 1, 2], k=5)
    assert recs.shape == (3, 5) and (recs >= 0).all()
    assert np.isfinite(run.score([0, 1], [3, 4])).all()


def test_gpu_path_builds_nccl_trainer_and_places_workers_on_their_gpu(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """use_gpu=True cannot run here (this machine has no GPU), so the GPU is MOCKED: Ray's
    ``ray.train.torch.get_device`` and ``torch.cuda.set_device`` are replaced. Checked without a GPU: the
    TorchTrainer for use_gpu=True uses the NCCL backend and one GPU per worker, the CPU config uses gloo, and a
    worker selects the GPU Ray assigned it and makes it current (NCCL collectives need that). The real
    GPU run is benchmarks/gpu_nccl_smoke.py."""
    import ray.train.torch
    import torch

    gpu = _config("scaling.num_workers=2", "scaling.use_gpu=true", "scaling.max_failures=1")
    settings = trainer_settings(gpu)
    assert (settings.backend, settings.use_gpu, settings.num_workers, settings.max_failures) == ("nccl", True, 2, 1)
    cpu = trainer_settings(_config("scaling.num_workers=3", "scaling.cpus_per_worker=2"))
    assert (cpu.backend, cpu.use_gpu, cpu.resources_per_worker) == ("gloo", False, {"CPU": 2.0})

    trainer = build_trainer(gpu, "gpu-settings", str(tmp_path))
    assert trainer.backend_config.backend == "nccl"
    assert trainer.scaling_config.use_gpu and trainer.scaling_config.num_workers == 2
    assert trainer.scaling_config.num_gpus_per_worker == 1 and trainer.scaling_config.num_cpus_per_worker == 1
    assert trainer.run_config.failure_config.max_failures == 1

    current: list[Any] = []
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cuda", 1))
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert select_worker_device(True, 4.0) == "cuda:1"
    assert current == [torch.device("cuda", 1)]

    threads = torch.get_num_threads()
    try:
        assert select_worker_device(False, 1.0) == "cpu" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
