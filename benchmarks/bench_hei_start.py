"""What HEI's gradient start costs: the first round's environment identification from a random start against
the same from the gradient start (the candidates from the positives' feature-gate gradients, their F statistics,
the chosen start's difficulty alignment, then the same EM, which measures every iterate's difficulty alignment
for the check of its path and returns its iterate of largest F), on one
pretrained feature path, in one process, ``--repeats`` times each, interleaved.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_hei_start.py --data ../shared/data/tiktok
    PYTHONPATH=. .venv/bin/python benchmarks/bench_hei_start.py            # the synthetic benchmark

Prints the median seconds of each phase, the gradient start's own share, the ratio of the whole HEI phase to
the random start's, and the sizes and (on synthetic data) ARI each start ends at.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from feature_path_setup import pretrained_feature_path  # benchmarks/ is on the path of a script run from it

from painvrl.invariance.diagnostics import loss_f_statistic
from painvrl.invariance.environments import (
    adjusted_rand_index,
    environment_models,
    identify_environments,
    seeded_generator,
)
from painvrl.invariance.gradient_init import difficulty_alignment, gradient_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="MMRec-format folder (TikTok); default: the synthetic benchmark")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    source = (["dataset.name=mmrec", f"dataset.path={args.data}", "dataset.split=explicit", "dataset.ood=popularity"]
              if args.data else ["dataset.ood=synthetic"])
    setup = pretrained_feature_path([*source, f"train.seed={args.seed}"])
    config, data, scorer, reference = setup.config, setup.data, setup.scorer, setup.reference
    env, seed = config.environments, config.train.seed
    truth = data.ground_truth.train_env if data.ground_truth is not None else None
    mask = torch.full((int(scorer.features.shape[1]),), 0.5)

    def hei(init: np.ndarray | None) -> np.ndarray:
        models = environment_models(env.n_envs, scorer, mask, config.model.k_f, env.input, env.l1_rho,
                                    config.model.init_std, seeded_generator(seed, "hei_model", 0))

        def criterion(labels: np.ndarray) -> float:
            """As the pipeline: every iterate's difficulty alignment (for the check of EM's path; the start's a
            second time, which the pipeline reuses) and its F."""
            difficulty_alignment(scorer, data.train, labels, env.n_envs)
            return loss_f_statistic(reference, labels, env.n_envs)

        return identify_environments(models, data.train, env, batch_size=config.train.batch_size,
                                     n_negatives=config.model.n_negatives, seed=seed, init_labels=init,
                                     criterion=None if init is None else criterion).labels

    times: dict[str, list[float]] = {"random": [], "start": [], "gradient": []}
    ends: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        began = time.perf_counter()
        ends["random"] = hei(None)
        times["random"].append(time.perf_counter() - began)
        began = time.perf_counter()
        start, _ = gradient_start(scorer, data.train, env.n_envs, env.init_components, reference, seed)
        alignment = difficulty_alignment(scorer, data.train, start, env.n_envs)
        times["start"].append(time.perf_counter() - began)
        ends["gradient"] = hei(start)
        times["gradient"].append(time.perf_counter() - began)
    kept_alignment = difficulty_alignment(scorer, data.train, ends["gradient"], env.n_envs)
    median = {name: float(np.median(values)) for name, values in times.items()}
    print(f"data: {args.data or 'synthetic'}; {len(data.train):,} training positives, {env.n_envs} environments, "
          f"{env.init_components} components; {args.threads} thread(s), median of {args.repeats}; the start's "
          f"difficulty alignment {alignment:.2f}, that of the iterate EM returns {kept_alignment:.2f} (EM runs "
          "from the start whatever their values)\n")
    print("| start | HEI phase (s) | of it, the start (s) | ratio to the random start | sizes | ARI |")
    print("|---|---|---|---|---|---|")
    for name in ("random", "gradient"):
        labels = ends[name]
        start_s = f"{median['start']:.2f}" if name == "gradient" else ""
        ari = f"{adjusted_rand_index(truth, labels):.2f}" if truth is not None else ""
        sizes = " / ".join(str(s) for s in np.bincount(labels, minlength=env.n_envs))
        print(f"| {name} | {median[name]:.2f} | {start_s} | {median[name] / median['random']:.2f}x | {sizes} | {ari} |")


if __name__ == "__main__":
    main()
