"""Which of HEI's gradient-start candidates carries the true environments, and does anything unsupervised pick it?

For a suite configuration and seed: pretrain the backbone, take the candidate partitions of
``environments.init=gradient`` (the top principal components of the positives' feature-gate gradients, each cut
at the 10%, ..., 90% quantiles) and one random partition. For each component, print the ARI against the true
environments of its best cut, and of the cut of largest loss F statistic (the criterion the gradient start
selects by) with that cut's F and invariance violation z; then run HEI's EM from that cut and print the ARI, F,
z, the environment models' final loss (the mixture's own fit), the sizes EM ends at and the rank correlation
of the labels with the reference model's losses (near +-1: a split of hard from easy positives). The header
gives the true partition's loss F and rank correlation.

    PYTHONPATH=. .venv/bin/python benchmarks/hei_start_candidates.py "same sign, strong/weak" --seed 0
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from feature_path_setup import pretrained_feature_path  # benchmarks/ is on the path of a script run from it
from scipy.stats import spearmanr

from painvrl.invariance.diagnostics import loss_f_statistic, partition_violation
from painvrl.invariance.environments import (
    adjusted_rand_index,
    environment_models,
    identify_environments,
    seeded_generator,
)
from painvrl.invariance.gradient_init import candidate_partitions, feature_gradients
from painvrl.workflows.suite import GRID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configuration", choices=sorted(GRID))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--components", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    seed = args.seed
    setup = pretrained_feature_path([f"dataset.seed={seed}", f"train.seed={seed}", *GRID[args.configuration]])
    config, data, scorer, reference = setup.config, setup.data, setup.scorer, setup.reference
    assert data.ground_truth is not None
    truth, n_envs, pairs = data.ground_truth.train_env, config.environments.n_envs, np.asarray(data.train)
    assert truth is not None, "the suite's configurations know every training positive's environment"
    candidates = candidate_partitions(feature_gradients(scorer, pairs), n_envs, args.components, seed)
    starts: list[tuple[str, np.ndarray, str]] = []
    for component in sorted({c.component for c in candidates if c.component is not None}):
        cuts = [c for c in candidates if c.component == component]
        picked = max(cuts, key=lambda c: loss_f_statistic(reference, c.labels, n_envs))
        best = max(cuts, key=lambda c: adjusted_rand_index(truth, c.labels))
        share = "" if picked.share is None else f" at {picked.share:.2f}"
        best_cut = f"{adjusted_rand_index(truth, best.labels):.2f}" + ("" if best.share is None
                                                                        else f" at {best.share:.2f}")
        starts.append((f"component {component + 1}{share}", picked.labels, best_cut))
    random = torch.randint(n_envs, (len(pairs),), generator=torch.Generator().manual_seed(seed)).numpy()
    starts.append(("random", random, ""))
    mask = torch.full((int(scorer.features.shape[1]),), 0.5)
    env = config.environments
    print(f"{args.configuration}, seed {seed}: the true partition has loss F "
          f"{loss_f_statistic(reference, truth, n_envs):.0f} and loss rank correlation "
          f"{spearmanr(truth, reference)[0]:.2f}\n")
    print("| start (the cut of largest F) | best cut's ARI | ARI | F | z | ARI after EM | F after EM | z after EM | "
          "final loss | sizes after EM | loss rank correlation after EM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, start, best_cut in starts:
        models = environment_models(n_envs, scorer, mask, config.model.k_f, env.input, env.l1_rho,
                                    config.model.init_std, seeded_generator(seed, "hei_model", 0))
        found = identify_environments(models, data.train, env, batch_size=config.train.batch_size,
                                      n_negatives=config.model.n_negatives, seed=seed, init_labels=start)
        z_start = partition_violation(reference, start, n_envs, seed)["z"]
        z_end = partition_violation(reference, found.labels, n_envs, seed)["z"]
        print(f"| {name} | {best_cut} | {adjusted_rand_index(truth, start):.2f} | "
              f"{loss_f_statistic(reference, start, n_envs):.0f} | {z_start:.0f} | "
              f"{adjusted_rand_index(truth, found.labels):.2f} | "
              f"{loss_f_statistic(reference, found.labels, n_envs):.0f} | {z_end:.0f} | "
              f"{found.epoch_losses[-1]:.4f} | {' / '.join(str(s) for s in found.sizes)} | "
              f"{spearmanr(found.labels, reference)[0]:.2f} |")

if __name__ == "__main__":
    main()
