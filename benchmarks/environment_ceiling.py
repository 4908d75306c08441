"""How much of a synthetic configuration's true environments any partition of the training positives can recover.

For each suite configuration (and the planted same-sign mixture of the HEI tests) and seed, the Bayes
assignment under the true click model (painvrl/data/synthetic_posterior.py: the latents and strengths known,
each positive put in the environment of largest posterior) and, for two environments, the best ARI of any cut
of the log-likelihood ratio (every share of positives put in the stronger-evidence environment, 2% to 98%):
the ceiling of an environment-identification method's ARI on that data. Prints a Markdown table.

    PYTHONPATH=. .venv/bin/python benchmarks/environment_ceiling.py --seeds 0 1
"""

from __future__ import annotations

import argparse

import numpy as np

from painvrl.config import load_config
from painvrl.data.synthetic import make_synthetic_with_latents
from painvrl.data.synthetic_posterior import bayes_environments, environment_log_likelihoods
from painvrl.invariance.environments import adjusted_rand_index
from painvrl.workflows.suite import GRID

SYN = "dataset.synthetic."
PLANTED_OVERRIDES = [f"{SYN}train_env_strengths=[3.0,0.5]", f"{SYN}n_users=400", f"{SYN}n_items=500"]
"""The same-sign mixture of tests/invariance/test_gradient_init.py."""
PLANTED = {"planted same sign 3.0 / 0.5 (400 x 500)": PLANTED_OVERRIDES}


def best_cut(truth: np.ndarray, ratio: np.ndarray) -> tuple[float, float]:
    """(the best ARI of any cut of ``ratio`` at its 2%, 4%, ..., 98% quantiles, the share above that cut)."""
    cuts = [(adjusted_rand_index(truth, (ratio > np.quantile(ratio, q)).astype(int)), 1.0 - q)
            for q in np.linspace(0.02, 0.98, 49)]
    best, share = max(cuts)
    return float(best), float(share)


def ceilings(overrides: list[str], seed: int) -> tuple[float, float | None, float | None]:
    """(ARI of the Bayes assignment, best ARI over cuts of the log-likelihood ratio, the share cut there)."""
    config = load_config(None, ["dataset.ood=synthetic", f"dataset.seed={seed}", *overrides])
    data, latents = make_synthetic_with_latents(config.dataset)
    assert data.ground_truth is not None and data.ground_truth.train_env is not None
    truth = data.ground_truth.train_env
    log_likelihoods = environment_log_likelihoods(latents, data.train)
    n_envs = log_likelihoods.shape[1]
    bayes = adjusted_rand_index(truth, bayes_environments(log_likelihoods, np.bincount(truth, minlength=n_envs)))
    if n_envs != 2:
        return bayes, None, None
    best, share = best_cut(truth, log_likelihoods[:, 1] - log_likelihoods[:, 0])
    return bayes, best, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=None, help="suite configurations (default: all)")
    args = parser.parse_args()
    configurations = {**PLANTED, **{name: GRID[name] for name in (args.configs or GRID)}}
    print("| configuration | train strengths | Bayes assignment ARI | best cut ARI | share cut |")
    print("|---|---|---|---|---|")
    for name, overrides in configurations.items():
        strengths = load_config(None, overrides).dataset.synthetic.train_env_strengths
        rows = [ceilings(overrides, seed) for seed in args.seeds]
        bayes = " / ".join(f"{r[0]:.2f}" for r in rows)
        best = " / ".join("-" if r[1] is None else f"{r[1]:.2f}" for r in rows)
        share = " / ".join("-" if r[2] is None else f"{r[2]:.2f}" for r in rows)
        print(f"| {name} | {', '.join(f'{s:g}' for s in strengths)} | {bayes} | {best} | {share} |", flush=True)


if __name__ == "__main__":
    main()
