"""Training-epoch time of the UltraGCN vs an InvRL-style step, and peak RSS at MovieLens scale.

Performance bar: at a Tiktok-like shape (36k users, 76k items, ~560k positives, 384-d features) our epoch must
be >= 10x faster, at a Kwai-like shape (7k users, 86k items, ~300k positives, 2048-d) >= 20x faster than a
step that projects the WHOLE item feature matrix every step (InvRL, github nickwzk/InvRL, recomputes
``features @ W`` for all items in every forward), with the same batch size, 50 negatives and the same loss.
Peak RSS of loading + one epoch at MovieLens scale (55k users, 6k items, 1.2M positives, 2276-d) must stay
under 4 GB.

Both sides run the same loss (UltraGCN.per_example_loss + L2) and Adam. Rows:

- ``naive``: InvRL-style, all items encoded per step, independent uniform negatives;
- ``ours, independent negatives`` (negative_pool = 0): only the unique items of the batch are encoded;
- ``ours, pool P`` (the default): each step's negatives come from a shared pool of P uniform items (each
  negative still marginally uniform; see painvrl/distributed/sampling.py), so a step encodes ~B + P items.

Random features and random positives; a fixed number of timed steps after warm-up, extrapolated to an epoch.

    python benchmarks/bench_backbone_epoch.py            # full shapes (a few minutes on 2 cores)
    python benchmarks/bench_backbone_epoch.py --quick    # smaller shapes, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from painvrl.distributed.sampling import draw_negative_pool, draw_negatives, make_generator, pool_active
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights
from painvrl.training.loop import DEFAULT_NEGATIVE_POOL, Optimisers, step_loss


@dataclass
class Shape:
    name: str
    n_users: int
    n_items: int
    n_positives: int
    feature_dim: int
    bar: float


FULL = [Shape("tiktok-like", 36_000, 76_000, 560_000, 384, 10.0),
        Shape("kwai-like", 7_000, 86_000, 300_000, 2048, 20.0)]
QUICK = [Shape("tiktok-like/4", 9_000, 19_000, 140_000, 384, 0.0),
         Shape("kwai-like/4", 1_750, 21_500, 75_000, 2048, 0.0)]
"""Quick shapes have no bar: the naive cost grows with the item count, ours does not, so ratios are smaller."""


def make_data(shape: Shape, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Random positives [N, 2] and L2-normalised random features [n_items, d]."""
    rng = np.random.default_rng(seed)
    train = np.stack([rng.integers(0, shape.n_users, shape.n_positives),
                      rng.integers(0, shape.n_items, shape.n_positives)], axis=1)
    features = rng.standard_normal((shape.n_items, shape.feature_dim), dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return train, torch.from_numpy(features)


def make_model(shape: Shape, train: np.ndarray, features: torch.Tensor, seed: int = 0) -> UltraGCN:
    """A UltraGCN over shared (not copied) features."""
    b_user, b_item = degree_weights(train, shape.n_users, shape.n_items)
    torch.manual_seed(seed)
    return UltraGCN(shape.n_users, shape.n_items, features, FeatureProjection(shape.feature_dim, 64), b_user,
                    b_item)


def naive_step_loss(model: UltraGCN, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """InvRL-style: project every item's features, then gather (same loss as UltraGCN.loss)."""
    all_items = torch.cat([model.item_embedding, model.encoder(model.features)], dim=1)
    user_vectors = model.user_embedding[users]
    pos_scores = (user_vectors * all_items[pos]).sum(-1)
    neg_scores = torch.bmm(all_items[neg], user_vectors.unsqueeze(2)).squeeze(2)
    per_example = model.scores_loss(users, pos, pos_scores, neg, neg_scores)
    return per_example.mean() + model.regularisation(users, pos)


@dataclass
class Variant:
    label: str
    naive: bool = False
    pool: int = 0
    sparse: bool = False


def time_variants(shape: Shape, variants: list[Variant], rounds: int, warmup: int, batch_size: int,
                  n_neg: int) -> list[float]:
    """Median seconds per training step (sampling excluded) of each variant. Steps of all variants are
    interleaved round by round, so a change in machine load affects them alike."""
    train, features = make_data(shape)
    users_all, items_all = torch.from_numpy(train[:, 0]), torch.from_numpy(train[:, 1])
    models = [make_model(shape, train, features) for _ in variants]
    optimisers = [Optimisers(m, list(m.parameters()), 1e-3, sparse=v.sparse)
                  for m, v in zip(models, variants, strict=True)]
    generator = make_generator(0, "bench", 0)
    times: list[list[float]] = [[] for _ in variants]
    for round_index in range(warmup + rounds):
        for index, (variant, model, optimiser) in enumerate(zip(variants, models, optimisers, strict=True)):
            rows = torch.randint(len(train), (batch_size,), generator=generator)
            users, pos = users_all[rows], items_all[rows]
            pool_items = positions = None
            if not variant.naive and pool_active(variant.pool, shape.n_items):
                pool_items, positions = draw_negative_pool(generator, batch_size, n_neg, shape.n_items,
                                                           variant.pool)
                neg = pool_items[positions]
            else:
                neg = draw_negatives(generator, batch_size, n_neg, shape.n_items)
            started = time.perf_counter()
            optimiser.zero_grad()
            if variant.naive:
                loss = naive_step_loss(model, users, pos, neg)
            else:
                loss = step_loss(model, users, pos, neg, batch_size, 1, pool=pool_items,
                                 pool_positions=positions)
            loss.backward()
            optimiser.step()
            if round_index >= warmup:
                times[index].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def check_same_loss() -> float:
    """Both formulations compute the same loss for the same batch (sanity check of the baseline)."""
    shape = Shape("check", 50, 80, 400, 16, 0.0)
    train, features = make_data(shape)
    model = make_model(shape, train, features)
    generator = make_generator(0, "check", 0)
    rows = torch.randint(len(train), (32,), generator=generator)
    neg = draw_negatives(generator, 32, 5, 80)
    users, pos = torch.from_numpy(train[:, 0])[rows], torch.from_numpy(train[:, 1])[rows]
    with torch.no_grad():
        return float((naive_step_loss(model, users, pos, neg) - step_loss(model, users, pos, neg, 32, 1)).abs())


def memory_child(n_users: int, n_items: int, n_positives: int, dims: list[int]) -> None:
    """Build an InteractionData at MovieLens scale and train one epoch; print peak RSS (run in a subprocess)."""
    from painvrl.config import Config
    from painvrl.data.dataset import InteractionData
    from painvrl.training.loop import LoopConfig, train_recommender
    from painvrl.training.pipeline import new_model

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    train = np.stack([rng.integers(0, n_users, n_positives), rng.integers(0, n_items, n_positives)], axis=1)
    held = np.stack([rng.integers(0, n_users, 1000), rng.integers(0, n_items, 1000)], axis=1)
    features = {f"m{i}": rng.standard_normal((n_items, d), dtype=np.float32) for i, d in enumerate(dims)}
    data = InteractionData("movielens-scale", n_users, n_items, train, held, held, features)
    config = Config()
    model = new_model(config, data, torch.from_numpy(data.feature_matrix()),
                           lambda: FeatureProjection(data.feature_dim, config.model.k_f), 0)
    cfg = LoopConfig.from_config(config, "x", epochs=1)
    cfg.progress = False
    started = time.perf_counter()
    train_recommender(model, data.train, lambda m: {"x": 0.0}, cfg)
    seconds = time.perf_counter() - started
    print(f"{peak_rss_bytes()} {seconds}")


def peak_rss_bytes() -> int:
    """Peak RSS of this process. VmHWM (Linux) belongs to the current address space; ru_maxrss would also
    carry the parent's peak across fork + exec."""
    try:
        for line in open("/proc/self/status").read().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller shapes (a quarter of each dimension)")
    parser.add_argument("--steps", type=int, default=0, help="timed rounds (default 7, quick 5)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--negatives", type=int, default=50)
    parser.add_argument("--pool", type=int, default=DEFAULT_NEGATIVE_POOL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        n_users, n_items, n_pos, dims = args.memory_child
        memory_child(int(n_users), int(n_items), int(n_pos), [int(d) for d in dims.split(",")])
        return

    steps = args.steps or (5 if args.quick else 7)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if busy > 0.5:
        print(f"WARNING: load average {busy:.1f} before starting: other processes compete for the cores; with "
              "oversubscribed OpenMP threads small-op steps slow down by 10-100x. Time on a quiet machine.")
    shapes = QUICK if args.quick else FULL
    print(f"|loss(naive) - loss(ours)| on a small batch: {check_same_loss():.2e}")
    print(f"batch {args.batch_size}, {args.negatives} negatives, {args.threads} threads, {steps} timed steps")
    header = f"{'shape':<16}{'variant':<30}{'s/step':>9}{'steps/epoch':>13}{'s/epoch':>10}{'speed-up':>10}{'bar':>6}"
    print(header)
    print("-" * len(header))
    all_pass = True
    for shape in [] if args.skip_timing else shapes:
        steps_per_epoch = math.ceil(shape.n_positives / args.batch_size)
        pool = args.pool
        variants = [Variant("naive (all items/step)", naive=True), Variant("ours, indep negs, Adam"),
                    Variant(f"ours, pool {pool}, Adam", pool=pool),
                    Variant("ours, indep negs, lazyAdam", sparse=True),
                    Variant(f"ours, pool {pool}, lazyAdam*", pool=pool, sparse=True)]
        seconds_per_step = time_variants(shape, variants, steps, 2, args.batch_size, args.negatives)
        naive = seconds_per_step[0]
        rows = [(v.label, t) for v, t in zip(variants, seconds_per_step, strict=True)]
        for label, seconds in rows:
            ratio = naive / seconds
            bar = ("ok" if ratio >= shape.bar else "MISS") if label.endswith("*") and shape.bar else ""
            all_pass &= bar != "MISS"
            print(f"{shape.name:<16}{label:<30}{seconds:>9.4f}{steps_per_epoch:>13}"
                  f"{seconds * steps_per_epoch:>10.1f}{ratio:>9.1f}x{bar:>6}")
        print(f"{'':<16}bar for the default (*): " + (f">= {shape.bar:.0f}x" if shape.bar else "none (quick)"))
    if not args.skip_memory:
        shape_args = ["13750", "1500", "300000", "569,569,569,569"] if args.quick else \
            ["55000", "6000", "1200000", "2048,100,128"]
        out = subprocess.run([sys.executable, __file__, "--memory-child", *shape_args], capture_output=True,
                             text=True, check=True).stdout.split()
        peak_gb, seconds = int(out[0]) / 1e9, float(out[1])
        ok = peak_gb < 4.0
        all_pass &= ok
        print(f"memory: {shape_args[0]} users, {shape_args[1]} items, {shape_args[2]} positives, "
              f"{sum(int(d) for d in shape_args[3].split(','))}-d: peak RSS {peak_gb:.2f} GB after loading + one "
              f"epoch ({seconds:.1f}s) [{'ok' if ok else 'MISS'}: < 4 GB]")
    print("ALL BARS MET" if all_pass else "SOME BAR MISSED")


if __name__ == "__main__":
    main()
