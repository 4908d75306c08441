"""Real-data evidence: erm, invrl and painvrl on MovieLens ml-latest-small.

Dataset config: ``dataset.name=movielens``, ``dataset.path`` (default /work/shared/data/ml-latest-small),
``dataset.movielens.text_features=derived`` (precomputed vectors, no model download), ``ood=temporal`` with
``temporal_scope=user`` (each user's latest interactions form the OOD split). Each method runs in-process
through :func:`painvrl.training.pipeline.run_pipeline` with the default config plus ``--set`` overrides.
Prints IID and OOD test recall@20 / ndcg@20 and the worst-environment IID recall@20 (environments: learned
by HEI for invrl / painvrl; one environment "all" for erm, so its worst-env equals its IID), mean ± std over
seeds. No bar is checked: the table is reported as it comes out. Each run executes in a fresh process, so the
table also gives the full pipeline's wall time per phase and the peak RSS of that process (the
"wall time and peak memory of the full default pipeline on ml-latest-small").

Usage: PYTHONPATH=. .venv/bin/python benchmarks/proof_movielens.py [--seeds 0] [--path DIR] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Any

import numpy as np

METHODS = ("erm", "invrl", "painvrl")


def run_one(method: str, seed: int, path: str, overrides: list[str]) -> dict[str, Any]:
    import resource

    from painvrl.config import load_config
    from painvrl.data.registry import load_dataset
    from painvrl.training.pipeline import run_pipeline

    config = load_config(None, ["train.progress=false", "dataset.name=movielens", f"dataset.path={path}",
                                "dataset.movielens.text_features=derived", "dataset.ood=temporal",
                                "dataset.temporal_scope=user", f"method={method}", f"train.seed={seed}",
                                *overrides])
    started = time.perf_counter()
    metrics = run_pipeline(config, load_dataset(config.dataset)).metrics
    test = metrics["test"]
    return {"method": method, "seed": seed,
            "iid_recall": test["iid"]["recall@20"], "iid_ndcg": test["iid"]["ndcg@20"],
            "ood_recall": test["ood"]["recall@20"], "ood_ndcg": test["ood"]["ndcg@20"],
            "worst_recall": test["worst_env"]["recall@20"], "seconds": time.perf_counter() - started,
            "timing": {k: float(v) for k, v in metrics["timing"].items()},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def fmt(rows: list[dict[str, Any]], key: str) -> str:
    values = [float(r[key]) for r in rows]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return f"{np.mean(values):.4f}" + ("" if math.isnan(sd) else f" ± {sd:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--path", default="/work/shared/data/ml-latest-small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=V")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    results = []
    from concurrent.futures import ProcessPoolExecutor

    for method in args.methods:
        for seed in args.seeds:
            with ProcessPoolExecutor(1) as pool:  # a fresh process per run: its peak RSS is this run's
                results.append(pool.submit(run_one, method, seed, args.path, args.overrides).result())
            row = results[-1]
            print(f"done {method} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                            if isinstance(v, float)), flush=True)
    keys = ("iid_recall", "iid_ndcg", "ood_recall", "ood_ndcg", "worst_recall")
    print(f"\nml-latest-small, temporal OOD (user scope), seeds {args.seeds}, overrides {args.overrides or 'none'}")
    header = f"{'method':<8} " + " ".join(f"{k:>16}" for k in ("IID recall@20", "IID ndcg@20", "OOD recall@20",
                                                                "OOD ndcg@20", "worst-env rec@20")) \
        + "   sec  peak RSS MB"
    print(header)
    print("-" * len(header))
    for method in args.methods:
        rows = [r for r in results if r["method"] == method]
        print(f"{method:<8} " + " ".join(f"{fmt(rows, k):>16}" for k in keys)
              + f" {np.mean([r['seconds'] for r in rows]):5.0f} {max(r['peak_rss_mb'] for r in rows):12.0f}")
    print("\nseconds per phase (mean over seeds)")
    for method in args.methods:
        rows = [r for r in results if r["method"] == method]
        phases = sorted({k for r in rows for k in r["timing"]})
        print(f"{method:<8} " + ", ".join(f"{k} {np.mean([r['timing'].get(k, 0.0) for r in rows]):.1f}"
                                          for k in phases))


if __name__ == "__main__":
    main()
