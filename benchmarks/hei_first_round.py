"""HEI's first round from either start: the ARI of the environments it returns against the true ones.

For each seed of a synthetic configuration (a suite configuration or the planted same-sign mixture of
tests/invariance/test_gradient_init.py), pretrain the backbone and run the first round of environment
identification (every gate half open) from the random start and from the gradient start. For the gradient
start it also prints the start's difficulty alignment (at or above ``environments.init_max_alignment`` HEI
falls back to random labels), how well the start's per-gate contrast ranks the truly spurious gates above the
invariant ones (AUC; below 0.5 it points at the invariant gates, which IRM across it would close), the loss F
statistic of every EM iterate (the start first; with ``--set environments.keep_iterate=least_aligned`` their
difficulty alignments), the iterate HEI returns and its alignment (at or above the threshold HEI starts again
from random labels).

    PYTHONPATH=. .venv/bin/python benchmarks/hei_first_round.py planted --seeds 0 1 2
    PYTHONPATH=. .venv/bin/python benchmarks/hei_first_round.py "same sign, strong/weak" --seeds 0 1 \
        --set model.name=freedom
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from painvrl.distributed.collective import LocalCollective
from painvrl.invariance.gradient_init import gate_contrast, gradient_start
from painvrl.invariance.identify import identify_training_environments
from painvrl.training.results import roc_auc
from painvrl.workflows.suite import GRID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment_ceiling import PLANTED_OVERRIDES
from feature_path_setup import PretrainedFeaturePath, pretrained_feature_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configuration", choices=["planted", *sorted(GRID)])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override, e.g. model.name=freedom (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    overrides = PLANTED_OVERRIDES if args.configuration == "planted" else list(GRID[args.configuration])
    print(f"{args.configuration} {' '.join(args.overrides)}\n")
    print("| seed | random start: ARI | gradient start: ARI | start used | difficulty alignment | spurious gates' "
          "contrast AUC | sizes | criterion of EM's iterates (start first) | iterate returned | its alignment | "
          "EM's last iterate: ARI |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        setup = pretrained_feature_path(["dataset.ood=synthetic", f"dataset.seed={seed}", f"train.seed={seed}",
                                         *overrides, *args.overrides])
        found = {}
        for init in ("random", "gradient"):
            config = replace(setup.config, environments=replace(setup.config.environments, init=init))
            found[init] = identify_training_environments(config, setup.data, setup.pretrained, LocalCollective())
        record = found["gradient"].history[-1]
        choice = record["init_choice"]
        path = record.get("f_per_iteration") or record.get("alignment_per_iteration") or []
        digits = 0 if "f_per_iteration" in record else 2
        kept = record.get("kept_iteration")
        last = ""  # the random start was used: no gradient-start EM to report
        if path:
            ended_there = kept == len(path) - 1 and record["init"] == "gradient"
            last_ari = found["gradient"].ari if ended_there else _last_iterate_ari(setup)
            last = f"{last_ari:.2f}"
        print(f"| {seed} | {found['random'].ari:.2f} | {found['gradient'].ari:.2f} | {record['init']} | "
              f"{choice['difficulty_alignment']:.2f} | {_spurious_contrast_auc(setup, seed):.2f} | "
              f"{' / '.join(str(s) for s in found['gradient'].sizes)} | {', '.join(f'{f:.{digits}f}' for f in path)} | "
              f"{'' if kept is None else kept} | {_format(record.get('kept_alignment'))} | {last} |", flush=True)


def _format(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _spurious_contrast_auc(setup: PretrainedFeaturePath, seed: int) -> float:
    """AUC of the gradient start's per-gate contrast for telling the spurious gates from the invariant ones."""
    env, data = setup.config.environments, setup.data
    assert data.ground_truth is not None and data.ground_truth.invariant_dims is not None
    start, _ = gradient_start(setup.scorer, data.train, env.n_envs, env.init_components, setup.reference, seed)
    contrast, _ = gate_contrast(setup.scorer, data.train, start, env.n_envs)
    auc = roc_auc(contrast, ~np.asarray(data.ground_truth.invariant_dims, dtype=bool))
    return float("nan") if auc is None else auc


def _last_iterate_ari(setup: PretrainedFeaturePath) -> float:
    """ARI of EM's last iterate from the gradient start: the first round with keep_iterate=last, never falling
    back."""
    environments = replace(setup.config.environments, init="gradient", keep_iterate="last", init_max_alignment=2.0)
    found = identify_training_environments(replace(setup.config, environments=environments), setup.data,
                                           setup.pretrained, LocalCollective())
    assert found.ari is not None
    return found.ari


if __name__ == "__main__":
    main()
