"""Does the synthetic exposure-bias scenario hurt ERM out of distribution? (docs/data.md, ``scenario: exposure``)

For each seed (``dataset.seed = train.seed = seed``) trains erm over a backbone (default UltraGCN) twice, in
process through :func:`painvrl.runner.train`: on the exposure-biased clicks of the default
exposure scenario, and on the same dataset with ``exposure_strength=0`` (uniform-exposure training clicks of the
same size; with the default ``ood_new_items`` > 0 the OOD rows are the same). Prints each run's test recall@20
on the IID split (exposure-biased clicks on held-out items) and the OOD split (uniform-exposure clicks on new
items), the front-page share of the training and OOD test clicks, and the front-page share of the model's
OOD top-20 lists; then mean ± std over seeds and two checks:

- IID > OOD: the biased erm's OOD recall is lower than its IID recall;
- biased < uniform: the biased erm's OOD recall is lower than the uniform-exposure erm's, by more than twice the
  standard error of the paired difference.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/check_exposure_bias.py [--seeds 0 1 2 3] [--epochs 30]
       [--model ultragcn] [--set dataset.synthetic.exposure_tail=0.5 ...]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def run(seed: int, strength: float, args: argparse.Namespace) -> dict[str, Any]:
    import painvrl
    from painvrl.config import load_config
    from painvrl.runner import train

    overrides = ["method=erm", f"model.name={args.model}", "dataset.synthetic.scenario=exposure",
                 "dataset.ood=synthetic", f"dataset.seed={seed}", f"train.seed={seed}", f"train.epochs={args.epochs}",
                 "train.progress=false", "train.device=cpu", f"dataset.synthetic.exposure_strength={strength}",
                 *args.set]
    config = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = train(config, Path(tmp) / "run")
        seconds = time.perf_counter() - start
        loaded = painvrl.load_run(Path(tmp) / "run")
    data = loaded.data
    column = data.features["m0"][:, data.info["exposure_columns"]["front_page"]]
    front = column > column.mean()
    top_share = float("nan")
    if data.ood_candidates is not None:
        with torch.no_grad():
            scores = loaded.model.ranking_scorer()(torch.arange(data.n_users)).numpy()[:, data.ood_candidates]
        top = data.ood_candidates[np.argsort(-scores, axis=1)[:, :20]]
        top_share = float(front[top].mean())
    test = metrics["test"]
    return {"iid": test["iid"]["recall@20"], "ood": test["ood"]["recall@20"],
            "front_train": data.info["front_share_train"], "front_ood": data.info["front_share_ood_test"],
            "front_top20_ood": top_share, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--model", default="ultragcn")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    rows: dict[str, list[dict[str, Any]]] = {"biased": [], "uniform": []}
    print(f"{'run':<8} {'seed':>4} {'iid r@20':>9} {'ood r@20':>9} {'front train':>11} {'front ood':>9} "
          f"{'front top20 ood':>15} {'s':>5}")
    for seed in args.seeds:
        for name, strength in (("biased", 1.0), ("uniform", 0.0)):
            row = run(seed, strength, args)
            rows[name].append(row)
            print(f"{name:<8} {seed:>4} {row['iid']:>9.4f} {row['ood']:>9.4f} {row['front_train']:>11.3f} "
                  f"{row['front_ood']:>9.3f} {row['front_top20_ood']:>15.3f} {row['seconds']:>5.1f}")
    print()
    for name, runs in rows.items():
        iid, ood = np.array([r["iid"] for r in runs]), np.array([r["ood"] for r in runs])
        print(f"{name:<8} mean ± std  IID {iid.mean():.4f} ± {iid.std(ddof=1) if len(iid) > 1 else 0:.4f}   "
              f"OOD {ood.mean():.4f} ± {ood.std(ddof=1) if len(ood) > 1 else 0:.4f}")
    biased_iid = np.array([r["iid"] for r in rows["biased"]])
    biased_ood = np.array([r["ood"] for r in rows["biased"]])
    uniform_ood = np.array([r["ood"] for r in rows["uniform"]])
    diff = uniform_ood - biased_ood
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    checks = {
        "IID > OOD (biased erm)": bool((biased_iid > biased_ood).all()),
        f"biased OOD < uniform OOD (paired diff {diff.mean():.4f}, 2 se {2 * se:.4f})": bool(diff.mean() > 2 * se),
    }
    print()
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")


if __name__ == "__main__":
    main()
