"""Ray Train cost of the PaInvRL pipeline: 0 (in-process), 1 and 2 data-parallel workers, per phase.

One painvrl run (1 round) on a medium synthetic shape (2000 users, 3000 items by default) per worker count:

- per-phase wall time from metrics.json ``timing`` (pretrain, mask = HEI + IMG, final, evaluate; measured
  inside rank 0 for Ray runs);
- the fixed Ray overhead of a run, from wall-clock timestamps (RayTrainOutcome.timestamps): "start" = from
  ``TorchTrainer.fit()`` to the start of the pipeline in rank 0 (controller + worker processes, process
  group, imports, dataset load), "end" = from the end of the pipeline to ``fit()`` returning (final report,
  checkpoint persisted, workers torn down, result read back); ray.init is measured once, separately;
- the per-step time of the recommender loop (pretrain and final epochs: median epoch seconds / steps per
  epoch, from the per-epoch history), workers vs the in-process loop. Bar: at most 1.3x for 1 worker.

The in-process run uses as many torch threads as a worker reserves (scaling.cpus_per_worker, default 1), so
the per-step comparison is like for like. Every run must reach the same test metrics (the design computes
exactly what one process computes); the table prints test iid recall@20 to show it. On a 2-core machine two
1-CPU workers cannot be faster than one process: each step's global batch is split, but the gloo all-reduces
and the duplicated per-step work (pool encoding, evaluation gathers) are added.

    python benchmarks/bench_ray_train.py             # medium shape, workers 0 1 2
    python benchmarks/bench_ray_train.py --quick     # small shape, seconds per run
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

import torch

from painvrl.config import Config, load_config


def make_config(args: argparse.Namespace, workers: int) -> Config:
    return load_config(None, [
        "method=painvrl", f"dataset.synthetic.n_users={args.n_users}", f"dataset.synthetic.n_items={args.n_items}",
        f"dataset.synthetic.interactions_per_user={args.interactions_per_user}", "painvrl.rounds=1",
        f"painvrl.pretrain_epochs={args.pretrain_epochs}", f"train.epochs={args.epochs}", "train.patience=100",
        f"environments.max_iters={args.hei_iters}", f"environments.env_epochs={args.env_epochs}",
        f"mask.epochs={args.mask_epochs}", "train.progress=false", "train.device=cpu",
        f"scaling.num_workers={workers}", f"scaling.cpus_per_worker={args.cpus_per_worker}"])


def per_step_ms(metrics: dict[str, Any], phase: str, steps_per_epoch: int) -> float:
    seconds = [h["seconds"] for h in metrics["history"] if h["phase"] == phase]
    return 1000.0 * statistics.median(seconds) / steps_per_epoch if seconds else float("nan")


def step_ratio(metrics: dict[str, Any], base: dict[str, Any], steps: int) -> float:
    """Per-step time (pretrain + final loop) of a run relative to the in-process run."""
    def both(m: dict[str, Any]) -> float:
        return per_step_ms(m, "pretrain", steps) + per_step_ms(m, "final", steps)

    return both(metrics) / both(base)


def run_in_process(config: Config) -> dict[str, Any]:
    from painvrl.data.registry import load_dataset
    from painvrl.training.pipeline import run_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(config.scaling.cpus_per_worker)))
    try:
        started = time.time()
        data = load_dataset(config.dataset)
        pipeline_start = time.time()
        result = run_pipeline(config, data)
        ended = time.time()
    finally:
        torch.set_num_threads(threads)
    return {"metrics": result.metrics, "wall": ended - started, "start": pipeline_start - started,
            "end": 0.0}


def run_ray(config: Config, storage: str) -> dict[str, Any]:
    from painvrl.training.ray_train import fit_with_ray_train

    started = time.time()
    outcome = fit_with_ray_train(config, run_name=f"bench-{uuid.uuid4().hex[:8]}", storage_path=storage)
    ended = time.time()
    stamps = outcome.timestamps
    return {"metrics": outcome.metrics, "wall": ended - started,
            "start": stamps["pipeline_start"] - stamps["fit_start"],
            "start_workers": stamps["worker_start"] - stamps["fit_start"],
            "end": ended - stamps["pipeline_end"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shape (400 users, 600 items)")
    parser.add_argument("--n-users", type=int, default=2000)
    parser.add_argument("--n-items", type=int, default=3000)
    parser.add_argument("--interactions-per-user", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--hei-iters", type=int, default=3)
    parser.add_argument("--env-epochs", type=int, default=3)
    parser.add_argument("--mask-epochs", type=int, default=5)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="RAY_worker_niceness for the local cluster (Ray's default is 15: on a busy machine "
                             "nice-15 workers lose the CPU to every other process; 0 = like the in-process run)")
    args = parser.parse_args()
    if args.quick:
        args.n_users, args.n_items, args.epochs, args.pretrain_epochs = 400, 600, 4, 3
        args.hei_iters, args.env_epochs, args.mask_epochs = 2, 2, 2

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; torch {torch.__version__}")
    if load > 1.0:
        print("WARNING: the machine is busy; timings are inflated and noisy")
    ray_init = None
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as storage:
        for workers in args.workers:
            config = make_config(args, workers)
            if workers == 0:
                results[0] = run_in_process(config)
            else:
                if ray_init is None:
                    import ray

                    from painvrl.training.ray_train import ensure_ray

                    t0 = time.time()
                    ensure_ray(make_config(args, max(args.workers)))
                    ray_init = time.time() - t0
                    print(f"ray.init: {ray_init:.1f}s, resources {ray.cluster_resources()}, worker niceness "
                          f"{args.worker_niceness}")
                results[workers] = run_ray(config, storage)
            print(f"done: {workers} workers, {results[workers]['wall']:.1f}s", flush=True)

    n_train = results[args.workers[0]]["metrics"]["provenance"]["dataset"]["n_train"]
    batch = make_config(args, 0).train.batch_size
    steps = math.ceil(n_train / batch)
    print(f"\nshape: {args.n_users} users, {args.n_items} items, {n_train} train positives, batch {batch} "
          f"({steps} steps/epoch), painvrl 1 round; torch threads per process = {args.cpus_per_worker:g}")
    header = (f"{'workers':>7} | {'pretrain':>8} | {'mask':>6} | {'final':>6} | {'eval':>5} | {'pipeline':>8} | "
              f"{'wall':>6} | {'start ovh':>9} | {'end ovh':>7} | {'step pre ms':>11} | {'step fin ms':>11} | "
              f"{'x in-proc':>9} | {'test r@20':>9}")
    print(header)
    print("-" * len(header))
    base = results.get(0)
    for workers, res in results.items():
        m = res["metrics"]
        timing = m["timing"]
        pre, fin = per_step_ms(m, "pretrain", steps), per_step_ms(m, "final", steps)
        ratio = "" if base is None else f"{step_ratio(m, base['metrics'], steps):.2f}"
        name = "in-proc" if workers == 0 else str(workers)
        print(f"{name:>7} | {timing.get('pretrain', 0):8.2f} | {timing.get('mask', 0):6.2f} | "
              f"{timing.get('final', 0):6.2f} | {timing.get('evaluate', 0):5.2f} | {timing['total']:8.2f} | "
              f"{res['wall']:6.1f} | {res['start']:9.2f} | {res['end']:7.2f} | {pre:11.2f} | {fin:11.2f} | "
              f"{ratio:>9} | {m['test']['iid']['recall@20']:9.5f}")
    print("(seconds unless noted; 'start ovh' for in-proc = dataset load; for Ray = fit() to rank 0's pipeline "
          "start, incl. worker start and dataset load; 'end ovh' = pipeline end to fit() returning; "
          "'x in-proc' = per-step time (pretrain + final) relative to the in-process loop)")
    if ray_init is not None:
        print(f"ray.init (once per session, not in any row): {ray_init:.1f}s")
    if base is not None and 1 in results:
        ratio1 = step_ratio(results[1]["metrics"], base["metrics"], steps)
        print(f"bar: 1-worker per-step time <= 1.3x in-process: {ratio1:.2f}x -> {'PASS' if ratio1 <= 1.3 else 'FAIL'}")
    recalls = {w: r["metrics"]["test"]["iid"]["recall@20"] for w, r in results.items()}
    same = max(recalls.values()) - min(recalls.values()) <= 1e-6
    print(f"same test metrics across worker counts: {same} {recalls}")


if __name__ == "__main__":
    main()
