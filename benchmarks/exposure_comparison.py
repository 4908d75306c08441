"""Every method against exposure bias, with the answer known: the synthetic exposure scenario (docs/data.md,
``scenario: exposure``), where training clicks follow an exposure-biased policy and the OOD test follows uniform
exposure.

For each seed (``dataset.seed = train.seed = seed``; every row of a seed shares its data, so differences are
paired) the rows of ROWS train over one backbone. Two references bound the gap:

- ``uniform``: erm trained on uniform-exposure clicks of the same size (``exposure_strength=0``; same items,
  features, users and OOD rows): what an unbiased log would give;
- ``oracle``: the true invariant feature mask (the exposure columns closed), the upper bound of a feature mask.

"gap closed" is (OOD - erm OOD) / (uniform OOD - erm OOD), paired per seed and then averaged; the oracle's own
gap closed says how much of the exposure bias a feature mask can remove at all (the item-ID embeddings learn
popularity from the biased log too).

    PYTHONPATH=. .venv/bin/python benchmarks/exposure_comparison.py --seeds 0 1 2 --model ultragcn
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

ROWS: dict[str, list[str]] = {
    "erm": ["method=erm"],
    "uniform": ["method=erm", "dataset.synthetic.exposure_strength=0"],
    "oracle": ["method=oracle"],
    "ips": ["method=ips"],
    "ips (known propensity)": ["method=ips", "ips.propensity=known"],
    "ips (known propensity, clip 0.005)": ["method=ips", "ips.propensity=known", "ips.clip=0.005"],
    "ips (power 1)": ["method=ips", "ips.power=1"],
    "pda": ["method=pda"],
    "pda (gamma 0.3)": ["method=pda", "pda.gamma=0.3"],
    "dro": ["method=dro"],
    "vrex": ["method=vrex"],
    "invpref": ["method=invpref"],
    "invrl": ["method=invrl"],
    "painvrl 0.9": ["method=painvrl", "mask.pref_ood=0.9"],
}


def run(row: str, seed: int, model: str, overrides: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from painvrl.config import load_config
    from painvrl.data.registry import load_dataset
    from painvrl.training.pipeline import run_pipeline

    logging.disable(logging.WARNING)
    config = load_config(None, ["dataset.synthetic.scenario=exposure", "dataset.ood=synthetic", f"model.name={model}",
                                f"dataset.seed={seed}", f"train.seed={seed}", "train.progress=false", *overrides,
                                *ROWS[row]])
    started = time.perf_counter()
    metrics = run_pipeline(config, load_dataset(config.dataset)).metrics
    return {"row": row, "seed": seed, "iid": metrics["test"]["iid"]["recall@20"],
            "ood": metrics["test"]["ood"]["recall@20"], "auc": metrics["mask"].get("auc"),
            "sizes": metrics["environments"].get("sizes"), "seconds": time.perf_counter() - started}


def _mean_se(values: list[float]) -> str:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    if not kept:
        return "-"
    mean = sum(kept) / len(kept)
    if len(kept) < 2:
        return f"{mean:.4f}"
    se = math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1) / len(kept))
    return f"{mean:.4f} ± {se:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="ultragcn")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--set", action="append", default=[], help="config override for every row (repeatable)")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    rows = ["erm", "uniform", *[r for r in args.rows if r not in ("erm", "uniform")]]
    tasks = [(row, seed, args.model, args.set) for seed in args.seeds for row in rows]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, *zip(*tasks, strict=True)))
    by = {(r["row"], r["seed"]): r for r in results}
    print(f"\nexposure scenario, backbone {args.model}, seeds {args.seeds}, overrides {args.set or 'none'}\n")
    print("| method | IID R@20 | OOD R@20 | OOD - erm | gap closed | mask AUC | environment sizes (seed "
          f"{args.seeds[0]}) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cell = [by[(row, s)] for s in args.seeds]
        diffs = [by[(row, s)]["ood"] - by[("erm", s)]["ood"] for s in args.seeds]
        gaps = [d / (by[("uniform", s)]["ood"] - by[("erm", s)]["ood"]) for d, s in zip(diffs, args.seeds,
                                                                                            strict=True)]
        auc = [c["auc"] for c in cell if c["auc"] is not None]
        sizes = cell[0]["sizes"] if len(cell[0]["sizes"] or []) > 1 else ""
        print(f"| {row} | {_mean_se([c['iid'] for c in cell])} | {_mean_se([c['ood'] for c in cell])} | "
              f"{'' if row == 'erm' else _mean_se(diffs)} | {'' if row == 'erm' else _mean_se(gaps)} | "
              f"{_mean_se(auc) if auc else ''} | {sizes} | {sum(c['seconds'] for c in cell) / len(cell):.0f} |")


if __name__ == "__main__":
    main()
