"""Every iterate of HEI's first-round EM from the gradient start, and which one each ``keep_iterate`` rule returns.

For each seed of synthetic configurations (suite configurations, or ``planted``: the same-sign mixture of
tests/invariance/test_gradient_init.py), pretrain the backbone and run the first round's EM from the gradient
start exactly as the pipeline does (every gate half open), never falling back. For every iterate (0 = the start)
it records the loss F statistic, the difficulty alignment, the AUC with which the iterate's per-gate contrast
ranks the truly spurious gates above the invariant ones (below 0.5 IRM across it would close the invariant
gates) and the ARI against the true environments. Per seed it prints whether the difficulty check
(``environments.init_max_alignment``) sends the round back to random labels (the start, or a later iterate on
EM's path, at or above it) and the iterate chosen by each rule (``largest_f``, ``least_aligned``, ``last``); at
the end, over the seeds the check lets through, the mean contrast AUC and ARI of each rule's choice.

    PYTHONPATH=. .venv/bin/python benchmarks/hei_iterates.py planted "same sign, strong/weak" --seeds 0 1
    PYTHONPATH=. .venv/bin/python benchmarks/hei_iterates.py all --seeds 0 1 --iterates    # every iterate too
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from painvrl.distributed.collective import LocalCollective
from painvrl.invariance.diagnostics import loss_f_statistic
from painvrl.invariance.environments import (
    adjusted_rand_index,
    environment_models,
    identify_environments,
    seeded_generator,
)
from painvrl.invariance.gradient_init import alignment_of, gate_contrast, gradient_start
from painvrl.training.results import roc_auc
from painvrl.workflows.suite import GRID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment_ceiling import PLANTED_OVERRIDES
from feature_path_setup import PretrainedFeaturePath, pretrained_feature_path

RULES = ("largest_f", "least_aligned", "last")


@dataclass
class Iterate:
    f: float
    alignment: float
    contrast_auc: float
    ari: float


def first_round_iterates(setup: PretrainedFeaturePath) -> list[Iterate]:
    """The first round's EM from the gradient start, as in painvrl/invariance/identify.py, with every iterate
    measured through the criterion hook."""
    config, data, scorer = setup.config, setup.data, setup.scorer
    env, model, train = config.environments, config.model, config.train
    assert data.ground_truth is not None and data.ground_truth.invariant_dims is not None
    spurious = ~np.asarray(data.ground_truth.invariant_dims, dtype=bool)
    truth = np.asarray(data.ground_truth.train_env)
    iterates: list[Iterate] = []

    def measure(labels: np.ndarray) -> float:
        contrast, reliance = gate_contrast(scorer, data.train, labels, env.n_envs)
        alignment = alignment_of(contrast, reliance)
        auc = roc_auc(contrast, spurious)
        f = loss_f_statistic(setup.reference, labels, env.n_envs)
        iterates.append(Iterate(f, alignment, float("nan") if auc is None else auc,
                                adjusted_rand_index(truth, labels)))
        return f

    start, _ = gradient_start(scorer, data.train, env.n_envs, env.init_components, setup.reference, train.seed)
    mask = torch.full((int(scorer.features.shape[1]),), 0.5, device=scorer.features.device)
    models = environment_models(env.n_envs, scorer, mask, model.k_f, env.input, env.l1_rho, model.init_std,
                                seeded_generator(train.seed, "hei_model", 0), train_users=env.train_users,
                                feature_bias=env.feature_bias)
    identify_environments(models, data.train, env, batch_size=train.batch_size, n_negatives=model.n_negatives,
                          seed=train.seed, init_labels=start, collective=LocalCollective(),
                          negative_pool=model.negative_pool, criterion=measure)
    return iterates


def chosen(iterates: list[Iterate], rule: str) -> int:
    """The iterate ``rule`` returns (ties: the earliest, as HEI)."""
    if rule == "largest_f":
        return int(np.argmax([it.f for it in iterates]))
    if rule == "least_aligned":
        return int(np.argmin([it.alignment for it in iterates]))
    return len(iterates) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configurations", nargs="+", help="suite configurations, 'planted', or 'all'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iterates", action="store_true", help="print every iterate too")
    args = parser.parse_args()
    names = ["planted", *GRID] if args.configurations == ["all"] else args.configurations
    unknown = [n for n in names if n != "planted" and n not in GRID]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from planted, all, {sorted(GRID)}")
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    print("Each rule's cell: iterate returned: spurious gates' contrast AUC / ARI / difficulty alignment\n")
    print("| configuration | seed | start's alignment | largest on EM's path | back to random | largest_f | "
          "least_aligned | last |")
    print("|---|---|---|---|---|---|---|---|")
    picked: dict[str, list[Iterate]] = {rule: [] for rule in RULES}
    sent_back = {"start": 0, "path": 0}
    for name in names:
        overrides = PLANTED_OVERRIDES if name == "planted" else list(GRID[name])
        for seed in args.seeds:
            setup = pretrained_feature_path(["dataset.ood=synthetic", f"dataset.seed={seed}", f"train.seed={seed}",
                                             *overrides])
            threshold = setup.config.environments.init_max_alignment
            iterates = first_round_iterates(setup)
            highest = max(it.alignment for it in iterates)
            back = "start" if iterates[0].alignment >= threshold else "path" if highest >= threshold else ""
            if back:
                sent_back[back] += 1
            cells = []
            for rule in RULES:
                k = chosen(iterates, rule)
                it = iterates[k]
                cells.append(f"{k}: {it.contrast_auc:.2f} / {it.ari:.2f} / {it.alignment:.2f}")
                if not back:
                    picked[rule].append(it)
            print(f"| {name} | {seed} | {iterates[0].alignment:.2f} | {highest:.2f} | {back} | {' | '.join(cells)} |",
                  flush=True)
            if args.iterates:
                for k, it in enumerate(iterates):
                    print(f"|   | iterate {k} | F {it.f:.0f} | alignment {it.alignment:.2f} | contrast AUC "
                          f"{it.contrast_auc:.2f} | ARI {it.ari:.2f} | | |", flush=True)
    print(f"\nsent back to random labels: {sent_back['start']} by the start, {sent_back['path']} by a later iterate")
    print("\n| rule | seeds | mean contrast AUC | mean ARI |")
    print("|---|---|---|---|")
    for rule, its in picked.items():
        if its:
            print(f"| {rule} | {len(its)} | {np.mean([it.contrast_auc for it in its]):.3f} | "
                  f"{np.mean([it.ari for it in its]):.3f} |")


if __name__ == "__main__":
    main()
