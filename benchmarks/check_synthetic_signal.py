"""Sanity check of the synthetic benchmark: does ERM exploit the spurious dims and lose OOD to the oracle?

Trains the project's UltraGCN (docs/algorithm.md) with a minimal loop of its own (Adam, uniform
negatives, early stopping on IID val recall@20, patience in epochs) twice per seed: ``erm`` on all feature
dims, ``oracle`` on the features multiplied by the true invariant mask. Prints recall@20 on the IID test split
and on ood_test (full ranking; train items excluded, plus val items for test and train+val+ood_val items for
ood_test). For reference it also prints the recall of the latent invariant scorer w_u . z_inv (the best any
invariant model can hope for), the mean spurious utility of each true environment's positives (its sign is
the spurious correlation) and, for two training environments, the ideal environment ARI: how well a threshold
on the TRUE spurious utility separates the environments per interaction (an upper bound for HEI).

Usage: PYTHONPATH=. .venv/bin/python benchmarks/check_synthetic_signal.py [--seeds 0 1 2] [--set key=value]
(``--set`` takes SyntheticConfig fields, e.g. ``--set n_users=1000``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
import yaml

from painvrl.config import DatasetConfig, SyntheticConfig
from painvrl.data.dataset import InteractionData
from painvrl.data.synthetic import SyntheticLatents, make_synthetic_with_latents
from painvrl.invariance.environments import adjusted_rand_index
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights


def recall_at_k(scores: np.ndarray, positives: np.ndarray, exclude: list[np.ndarray], k: int = 20) -> float:
    """Mean over users with positives of |top-k ∩ P| / |P|; excluded pairs are scored -inf."""
    scores = scores.copy()
    for pairs in exclude:
        scores[pairs[:, 0], pairs[:, 1]] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    hit = np.zeros_like(scores, dtype=bool)
    np.put_along_axis(hit, top, True, axis=1)
    n_pos = np.bincount(positives[:, 0], minlength=scores.shape[0])
    n_hit = np.bincount(positives[:, 0], weights=hit[positives[:, 0], positives[:, 1]], minlength=scores.shape[0])
    users = n_pos > 0
    return float((n_hit[users] / n_pos[users]).mean())


@torch.no_grad()
def all_scores(model: UltraGCN) -> np.ndarray:
    return (model.user_embedding @ model.all_item_vectors().T).numpy()


def train_and_eval(data: InteractionData, features: np.ndarray, seed: int, epochs: int, lr: float,
                   batch_size: int, n_neg: int, patience: int) -> dict[str, float]:
    torch.manual_seed(seed)
    b_user, b_item = degree_weights(data.train, data.n_users, data.n_items)
    model = UltraGCN(data.n_users, data.n_items, torch.from_numpy(features),
                     FeatureProjection(features.shape[1], 64), b_user, b_item)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    train = torch.from_numpy(data.train)
    best, best_state, bad = -1.0, None, 0
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            batch = train[order[start:start + batch_size]]
            neg = torch.randint(0, data.n_items, (len(batch), n_neg), generator=generator)
            loss = model.loss(batch[:, 0], batch[:, 1], neg)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        val = recall_at_k(all_scores(model), data.val, [data.train])
        if val > best:
            best, bad = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    scores = all_scores(model)
    assert data.ood_val is not None and data.ood_test is not None
    return {
        "val": best,
        "test": recall_at_k(scores, data.test, [data.train, data.val]),
        "ood_val": recall_at_k(scores, data.ood_val, [data.train, data.val]),
        "ood_test": recall_at_k(scores, data.ood_test, [data.train, data.val, data.ood_val]),
    }


def spurious_alignment(data: InteractionData, latents: SyntheticLatents) -> str:
    """Mean spurious utility v_u . z_sp[i] of the positives of each true environment (sign = correlation)."""
    gt = data.ground_truth
    assert gt is not None and gt.train_env is not None and data.ood_test is not None and data.ood_val is not None
    parts = []
    for env in range(int(gt.train_env.max()) + 1):
        pairs = data.train[gt.train_env == env]
        parts.append(f"env{env} {latents.spurious_utility(pairs[:, 0], pairs[:, 1]).mean():+.2f}")
    ood = np.concatenate([data.ood_val, data.ood_test])
    parts.append(f"ood {latents.spurious_utility(ood[:, 0], ood[:, 1]).mean():+.2f}")
    return "mean spurious utility of positives: " + ", ".join(parts)


def ideal_environment_ari(data: InteractionData, latents: SyntheticLatents) -> str:
    """How identifiable the training environments are per interaction: the best ARI over thresholds of the TRUE
    spurious utility of each training positive (the latent classifier no learner has; an upper bound for HEI
    with two environments, the sign of the strength difference deciding which side is which)."""
    gt = data.ground_truth
    assert gt is not None and gt.train_env is not None
    if int(gt.train_env.max()) != 1:
        return "ideal environment ARI: only computed for two training environments"
    utility = latents.spurious_utility(data.train[:, 0], data.train[:, 1])
    best = max(adjusted_rand_index(gt.train_env, (utility < np.quantile(utility, q)).astype(np.int64))
               for q in np.linspace(0.05, 0.95, 37))
    return f"ideal environment ARI (threshold on the true spurious utility): {best:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--negatives", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="SyntheticConfig field=value (YAML value)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    overrides = {}
    for text in args.set:
        key, raw = text.split("=", 1)
        overrides[key] = yaml.safe_load(raw)
    rows = []
    for seed in args.seeds:
        cfg = DatasetConfig(seed=seed, synthetic=dataclasses.replace(SyntheticConfig(), **overrides))
        data, latents = make_synthetic_with_latents(cfg)
        print(f"seed {seed}: {spurious_alignment(data, latents)}")
        print(f"seed {seed}: {ideal_environment_ari(data, latents)}")
        ideal = latents.user_preference @ latents.item_invariant.T
        assert data.ood_test is not None and data.ood_val is not None
        print(f"seed {seed} latent invariant scorer: test "
              f"{recall_at_k(ideal, data.test, [data.train, data.val]):.4f} ood_test "
              f"{recall_at_k(ideal, data.ood_test, [data.train, data.val, data.ood_val]):.4f}")
        full = data.feature_matrix()
        assert data.ground_truth is not None and data.ground_truth.invariant_dims is not None
        oracle = full * data.ground_truth.invariant_dims.astype(np.float32)
        for method, feats in (("erm", full), ("oracle", oracle)):
            t0 = time.time()
            res = train_and_eval(data, feats, seed, args.epochs, args.lr, args.batch_size, args.negatives,
                                 args.patience)
            rows.append((seed, method, res, time.time() - t0))
            print(f"seed {seed} {method:6s} val {res['val']:.4f} test {res['test']:.4f} "
                  f"ood_val {res['ood_val']:.4f} ood_test {res['ood_test']:.4f} ({time.time() - t0:.1f}s)",
                  flush=True)
    print("\nrecall@20, mean ± std over seeds", args.seeds, "lr", args.lr, "overrides", overrides)
    print(f"{'method':8s} {'test (IID)':>18s} {'ood_test':>18s}")
    means = {}
    for method in ("erm", "oracle"):
        test = np.array([r[2]["test"] for r in rows if r[1] == method])
        ood = np.array([r[2]["ood_test"] for r in rows if r[1] == method])
        means[method] = (test.mean(), ood.mean())
        print(f"{method:8s} {test.mean():10.4f} ± {test.std():.4f} {ood.mean():10.4f} ± {ood.std():.4f}")
    print(f"oracle/erm OOD ratio {means['oracle'][1] / max(means['erm'][1], 1e-12):.2f}; "
          f"erm/oracle IID ratio {means['erm'][0] / max(means['oracle'][0], 1e-12):.2f}")


if __name__ == "__main__":
    main()
