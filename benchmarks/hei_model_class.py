"""How far HEI's environment models can separate the true environments, given the true environments.

EM can only settle in a partition its environment models can express. This benchmark measures that limit on
the synthetic benchmark, where the true environments are known: the E environment models are trained on the
TRUE partition of the training positives (``environments.env_epochs`` and 5x that many epochs), and the ARI of
the labels they then give (argmax of score, HEI's relabelling rule) and of the best cut of their score
difference at any share is printed, once with the pretrained user table frozen (the default) and once with
``environments.train_users`` (one user table shared by the E models, trained with them).

It then fits the same feature path as a mixture of full-softmax click models (each environment's model is the
log-softmax of its scores over all items, the shared user table trained) by EM with soft assignments, from the
true partition, from HEI's gradient start and from the partitions HEI's first round ends at from either start
(EM's last iterate, without the fallback of a start aligned with difficulty),
and prints where each ends (ARI) and its marginal log-likelihood per positive, the criterion EM climbs: whether
the truth's basin is where the likelihood is highest, whether EM reaches it from the start HEI has, and whether
the likelihood could choose between HEI's two starts.

    PYTHONPATH=. .venv/bin/python benchmarks/hei_model_class.py --configuration planted --seeds 0 1
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from painvrl.config import Config
from painvrl.distributed.collective import LocalCollective
from painvrl.invariance.environments import (
    adjusted_rand_index,
    environment_models,
    labels_from_fits,
    seeded_generator,
    train_environment_models,
)
from painvrl.invariance.gradient_init import gradient_start
from painvrl.invariance.identify import identify_training_environments
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.workflows.suite import GRID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment_ceiling import PLANTED_OVERRIDES, best_cut
from feature_path_setup import pretrained_feature_path


def trained_on_truth(config: Config, scorer: LinearContentRecommender, pairs: np.ndarray, truth: np.ndarray,
                     train_users: bool, epochs: int) -> tuple[float, float]:
    """(ARI of the relabelling, best-cut ARI) of environment models trained on the true partition."""
    env, seed = config.environments, config.train.seed
    mask = torch.full((int(scorer.features.shape[1]),), 0.5)
    models = environment_models(2, scorer, mask, config.model.k_f, env.input, env.l1_rho, config.model.init_std,
                                seeded_generator(seed, "hei_model", 0), train_users=train_users)
    train_environment_models(models, pairs, truth, epochs, env.lr, config.train.batch_size,
                             config.model.n_negatives, seed, (0, 0), LocalCollective(), False,
                             config.model.negative_pool)
    fits = models.score_all(torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])).numpy()
    return adjusted_rand_index(truth, labels_from_fits(fits)), best_cut(truth, fits[:, 0] - fits[:, 1])[0]


def softmax_mixture(scorer: LinearContentRecommender, pairs: np.ndarray, start: np.ndarray, seed: int,
                    iterations: int = 10, steps: int = 100) -> tuple[np.ndarray, float]:
    """Soft EM for two full-softmax environment models <P_u, [Q_i ; W_k (f_i / 2)]> with P trained and shared:
    (the argmax labels at the end, the marginal log-likelihood per positive)."""
    users_all = scorer.user_embedding.detach()
    items = scorer.item_embedding.detach()
    features = scorer.features.detach() * 0.5
    users, positives = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
    weight = torch.nn.Parameter(torch.randn(2, users_all.shape[1] - items.shape[1], features.shape[1],
                                            generator=torch.Generator().manual_seed(seed)) * 0.01)
    table = torch.nn.Parameter(users_all.clone())

    def log_likelihoods() -> torch.Tensor:
        out = []
        for k in range(2):
            logits = table @ torch.cat([items, features @ weight[k].T], dim=1).T
            out.append(torch.log_softmax(logits, dim=1)[users, positives])
        return torch.stack(out, 1)

    responsibilities = torch.nn.functional.one_hot(torch.as_tensor(start), 2).float()
    marginal = float("nan")
    for _ in range(iterations):
        optimizer = torch.optim.Adam([weight, table], lr=1e-2)
        for _ in range(steps):
            loss = -(log_likelihoods() * responsibilities).sum() / len(pairs)
            loss = loss + 1e-4 * (weight.pow(2).sum() + table.pow(2).sum())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            posterior = log_likelihoods() + torch.log(responsibilities.mean(0).clamp(min=1e-9))
            normaliser = torch.logsumexp(posterior, dim=1)
            responsibilities = torch.exp(posterior - normaliser[:, None])
            marginal = float(normaliser.mean())
    return responsibilities.argmax(1).numpy().astype(np.int64), marginal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configuration", default="planted", choices=["planted", *sorted(GRID)])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    overrides = PLANTED_OVERRIDES if args.configuration == "planted" else list(GRID[args.configuration])
    print(f"{args.configuration}\n")
    print("| seed | environment models trained on the truth | epochs | relabelling ARI | best-cut ARI |")
    print("|---|---|---|---|---|")
    mixture_rows = []
    for seed in args.seeds:
        setup = pretrained_feature_path(["dataset.ood=synthetic", f"dataset.seed={seed}", f"train.seed={seed}",
                                         *overrides])
        config, data, pretrained, scorer = setup.config, setup.data, setup.pretrained, setup.scorer
        assert data.ground_truth is not None and data.ground_truth.train_env is not None
        truth = data.ground_truth.train_env.astype(np.int64)
        if truth.max() != 1:
            raise SystemExit(f"{args.configuration}: this benchmark is for two training environments")
        pairs = np.asarray(data.train)
        for train_users in (False, True):
            for epochs in (config.environments.env_epochs, 5 * config.environments.env_epochs):
                relabel, cut = trained_on_truth(config, scorer, pairs, truth, train_users, epochs)
                users = "user table trained" if train_users else "user table frozen"
                print(f"| {seed} | {users} | {epochs} | {relabel:.2f} | {cut:.2f} |", flush=True)
        start, _ = gradient_start(scorer, data.train, 2, config.environments.init_components, setup.reference,
                                  seed)
        starts = [("the true partition", truth), ("the gradient start", start)]
        for init in ("random", "gradient"):  # where HEI's first round ends from either start: EM's last
            # iterate, never falling back (what EM itself reaches from the gradient start)
            run_config = replace(config, environments=replace(config.environments, init=init, keep_iterate="last",
                                                              init_max_alignment=2.0))
            found = identify_training_environments(run_config, data, pretrained, LocalCollective())
            starts.append((f"HEI's first round, {init} start", found.labels))
        for name, labels in starts:
            end, marginal = softmax_mixture(scorer, pairs, labels, seed)
            mixture_rows.append((seed, name, adjusted_rand_index(truth, labels), adjusted_rand_index(truth, end),
                                 marginal, np.bincount(end, minlength=2).tolist()))
    print("\n| seed | softmax mixture, soft EM from | ARI at the start | ARI at the end | marginal log-likelihood | "
          "sizes |")
    print("|---|---|---|---|---|---|")
    for seed, name, first, last, marginal, sizes in mixture_rows:
        print(f"| {seed} | {name} | {first:.2f} | {last:.2f} | {marginal:.4f} | {sizes[0]} / {sizes[1]} |")


if __name__ == "__main__":
    main()
