"""Wall time per phase and peak memory of the full PaInvRL pipeline at a Tiktok-like shape.

Data: the synthetic benchmark at Tiktok-like shape (``--shape tiktok-like``: 36,000 users, 76,000 items,
29 positives per user -> about 576k training positives, three 128-d modality blocks = 384-d features) or a
quarter of it (``--shape quick``). The pipeline is the DEFAULT config (method painvrl) plus ``--set`` overrides;
on 2 CPU cores the full default schedule takes hours at this shape, so the default run here reduces the epoch
counts (printed with the table) and the table gives the time per unit of work of every phase as well, from
which the full default schedule's time is projected (each phase's cost is linear in its epochs).

Each run executes in a fresh process; peak RSS is that process's ru_maxrss (data generation included, which is
reported separately).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_full_pipeline.py --shape quick
    PYTHONPATH=. .venv/bin/python benchmarks/bench_full_pipeline.py                  # tiktok-like, reduced epochs
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

SHAPES = {
    "tiktok-like": {"n_users": 36_000, "n_items": 76_000, "interactions_per_user": 29,
                    "modality_dims": [128, 128, 128]},
    "quick": {"n_users": 9_000, "n_items": 19_000, "interactions_per_user": 29, "modality_dims": [128, 128, 128]},
}
REDUCED = ["painvrl.pretrain_epochs=2", "painvrl.rounds=1", "environments.max_iters=1", "environments.env_epochs=2",
           "mask.epochs=2", "train.epochs=2"]
"""Epoch counts of the measured run (the default schedule is projected from them)."""


def run(shape: str, overrides: list[str], threads: int) -> dict[str, Any]:
    import resource

    import torch

    from painvrl.config import load_config
    from painvrl.data.synthetic import make_synthetic
    from painvrl.training.pipeline import run_pipeline

    torch.set_num_threads(threads)
    logging.disable(logging.WARNING)
    sets = [f"dataset.synthetic.{k}=[{','.join(map(str, v))}]" if isinstance(v, list) else f"dataset.synthetic.{k}={v}"
            for k, v in SHAPES[shape].items()]
    config = load_config(None, ["method=painvrl", "dataset.ood=synthetic", "train.progress=false", *sets,
                                *overrides])
    started = time.perf_counter()
    data = make_synthetic(config.dataset)
    generate = time.perf_counter() - started
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics = run_pipeline(config, data).metrics
    return {"generate": generate, "timing": metrics["timing"], "rss_after_data_mb": rss_data,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_train": len(data.train), "feature_dim": data.feature_dim, "config": config,
            "test_iid_recall": metrics["test"]["iid"]["recall@20"],
            "test_ood_recall": metrics["test"]["ood"]["recall@20"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiktok-like")
    parser.add_argument("--full", action="store_true", help="the default schedule instead of reduced epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=V")
    args = parser.parse_args()
    overrides = ([] if args.full else REDUCED) + args.overrides
    with ProcessPoolExecutor(1) as pool:
        out = pool.submit(run, args.shape, overrides, args.threads).result()
    cfg = out["config"]
    timing = out["timing"]
    shape = cfg.dataset.synthetic
    print(f"\nfull pipeline, method painvrl, shape {args.shape}: {shape.n_users} users, {shape.n_items} items, "
          f" {out['n_train']} training positives, {out['feature_dim']}-d features, {args.threads} threads")
    print(f"overrides: {overrides or 'none (default schedule)'}")
    print(f"{'phase':<10} {'seconds':>9} {'units':>28} {'s / unit':>9} {'default units':>14} {'projected s':>12}")
    from painvrl.config import Config

    default = Config()
    hei_units = cfg.painvrl.rounds * cfg.environments.max_iters * cfg.environments.env_epochs
    hei_default = default.painvrl.rounds * default.environments.max_iters * default.environments.env_epochs
    units = {
        "pretrain": (cfg.painvrl.pretrain_epochs, "pretrain epochs (+ evals)", default.painvrl.pretrain_epochs),
        "mask": (hei_units + cfg.painvrl.rounds * cfg.mask.epochs, "HEI epochs + IMG epochs",
                 hei_default + default.painvrl.rounds * default.mask.epochs),
        "final": (cfg.train.epochs, "final epochs (+ evals)", default.train.epochs),
        "evaluate": (1, "final val+test evaluation", 1),
    }
    projected = 0.0
    for phase, (n, label, n_default) in units.items():
        seconds = float(timing.get(phase, 0.0))
        per = seconds / max(n, 1)
        projected += per * n_default
        print(f"{phase:<10} {seconds:>9.1f} {f'{n} {label}':>28} {per:>9.1f} {n_default:>14} {per * n_default:>12.0f}")
    print(f"{'total':<10} {float(timing.get('total', 0.0)):>9.1f} {'':>28} {'':>9} {'':>14} {projected:>12.0f}")
    print(f"data generation {out['generate']:.1f} s; peak RSS after data {out['rss_after_data_mb']:.0f} MB, "
          f"whole run {out['peak_rss_mb']:.0f} MB")
    print("projection: early stopping ends the final training at or before its epoch budget, HEI may stop "
          "before max_iters, and mask-phase units mix HEI and IMG epochs of different costs: an upper-bound "
          "estimate, not a measurement.")
    print(f"(test recall@20 of this reduced run, for sanity only: IID {out['test_iid_recall']:.4f}, "
          f"OOD {out['test_ood_recall']:.4f})")


if __name__ == "__main__":
    main()
