"""What an invariance method costs over each backbone on real data: the marginal time of one epoch of every
phase, and the full default schedule's wall time as a ratio to erm over the same backbone.

For each backbone, two short painvrl runs (``SHORT`` epoch counts n and 2n of every phase) give, by difference,
the time of one pretraining epoch, one HEI environment-model epoch, one IMG epoch and one final-model epoch, and
the fixed cost of a round (relabelling), and the one-off fit of the feature path HEI and IMG score through
(backbones that are not their own feature path). The HEI and IMG epochs are also given as ratios to ultragcn's,
measured in the same run. The default schedule is then projected phase by phase
(each phase is linear in its epochs): pretraining ``painvrl.pretrain_epochs``; ``painvrl.rounds`` rounds of
``environments.max_iters`` x ``environments.env_epochs`` HEI epochs (an upper bound: HEI stops early when fewer
than ``environments.change_tol`` of the labels change) and ``mask.epochs`` IMG epochs; and a final model trained
for as many epochs as erm needs (the epochs-to-stop of erm under the compare schedule: its
selected epoch plus the patience window, ``ERM_EPOCHS``). erm's time is its epoch cost times the same epoch count.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_method_cost.py --data data/tiktok
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

SHORT = ["painvrl.rounds=1", "environments.max_iters=1", "train.eval_every=1000", "train.progress=false",
         "train.batch_size=2048", "train.patience=1000"]
ERM_EPOCHS = {"vbpr": 191, "mmgcn": 47, "lattice": 119, "freedom": 77, "bm3": 111, "ultragcn": 60}
"""erm epochs-to-stop on TikTok under benchmarks/compare.py's schedule: the mean selected epoch of the published-split
reproduction table in docs/results.md plus the 30-epoch patience window."""


def phase_times(data: str, model: str, n: int, threads: int, overrides: list[str]) -> dict[str, float]:
    """Wall time of each phase of one painvrl run with n epochs of every phase."""
    import logging

    import torch

    from painvrl.config import load_config
    from painvrl.data.registry import load_dataset
    from painvrl.training.pipeline import run_pipeline

    torch.set_num_threads(threads)
    logging.disable(logging.WARNING)
    config = load_config(None, ["dataset.name=mmrec", f"dataset.path={data}", "dataset.split=explicit",
                                "dataset.ood=popularity", f"model.name={model}", "method=painvrl", *SHORT,
                                f"painvrl.pretrain_epochs={n}", f"environments.env_epochs={n}",
                                f"mask.epochs={n}", f"train.epochs={n}", *overrides])
    dataset = load_dataset(config.dataset)
    stamps: dict[str, float] = {}
    started = time.perf_counter()

    def reporter(update: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        stamps[str(update.get("phase"))] = time.perf_counter() - started

    timing = run_pipeline(config, dataset, None, reporter).metrics["timing"]
    # HEI runs from the feature path's fit (or pretraining's last report) to its own report: the run's start-up
    # (model build, torch's deterministic-mode import) lies before pretraining and must not count as HEI's
    # per-iteration cost, and the fit is a one-off cost of its own.
    fitted = stamps.get("feature_path", stamps["pretrain"])
    hei = stamps["hei"] - fitted
    fit = fitted - stamps["pretrain"]
    return {"pretrain": timing["pretrain"], "fit": fit, "hei": hei, "img": timing["mask"] - hei - fit,
            "final": timing["final"]}


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference > 0 else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/tiktok")
    parser.add_argument("--models", nargs="+", default=["ultragcn", "vbpr", "mmgcn", "lattice", "freedom", "bm3"])
    parser.add_argument("--epochs", type=int, default=2, help="n of the short runs (n and 2n epochs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=V")
    args = parser.parse_args()

    from painvrl.config import Config

    defaults = Config()
    rounds, iters = defaults.painvrl.rounds, defaults.environments.max_iters
    env_epochs, mask_epochs, pretrain = defaults.environments.env_epochs, defaults.mask.epochs, \
        defaults.painvrl.pretrain_epochs
    print(f"default schedule: pretrain {pretrain}, {rounds} rounds x (HEI <= {iters} x {env_epochs} epochs + "
          f"IMG {mask_epochs} epochs), final = erm's epochs\n")
    print("| backbone | erm epoch (s) | feature-path fit (s) | HEI epoch (s) | HEI / ultragcn | "
          "HEI fixed per iteration (s) | IMG epoch (s) | IMG / ultragcn | erm epochs | projected erm (s) | "
          "projected painvrl (s) | painvrl / erm | IMG share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    reference: dict[str, float] = {}
    n = args.epochs
    for model in args.models:
        with ProcessPoolExecutor(1) as pool:  # a fresh process per run: no warm caches carried over
            one = pool.submit(phase_times, args.data, model, n, args.threads, args.overrides).result()
        with ProcessPoolExecutor(1) as pool:
            two = pool.submit(phase_times, args.data, model, 2 * n, args.threads, args.overrides).result()
        epoch = (two["final"] - one["final"]) / n
        hei_epoch = (two["hei"] - one["hei"]) / n
        hei_fixed = max(one["hei"] - n * hei_epoch, 0.0)
        img_epoch = (two["img"] - one["img"]) / n
        erm_epochs = ERM_EPOCHS.get(model, 100)
        erm = erm_epochs * epoch
        hei_total = rounds * iters * (env_epochs * hei_epoch + hei_fixed)
        img_total = rounds * mask_epochs * img_epoch
        painvrl = pretrain * epoch + one["fit"] + hei_total + img_total + erm
        if model == "ultragcn" or not reference:
            reference = {"hei": hei_epoch, "img": img_epoch}
        print(f"| {model} | {epoch:.2f} | {one['fit']:.1f} | {hei_epoch:.2f} | "
              f"{_ratio(hei_epoch, reference['hei'])} | {hei_fixed:.2f} | {img_epoch:.2f} | "
              f"{_ratio(img_epoch, reference['img'])} | {erm_epochs} | {erm:.0f} | "
              f"{painvrl:.0f} | {painvrl / erm:.1f}x | {img_total / painvrl:.0%} |", flush=True)


if __name__ == "__main__":
    main()
