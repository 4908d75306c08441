"""Cost of the invariance phases against the backbone's own training step.

Performance bars:

1. One HEI iteration with E = 10 environments (``env_epochs`` epochs of the 10 stacked models + relabelling all
   positives) costs at most 2x training one backbone for the same epochs on all positives (the project's step:
   negative pool, lazy Adam on P/Q). Also reported: the ratio against training the 10 environment models one
   after another (each on its own positives, same negatives distribution).
2. A Pareto mask step (two objectives, gradvar, EPO) costs at most 3x a plain ERM step on the same batch. Both
   the ERM-only mask step (gated features, same per-environment batches) and the backbone's step on the same
   rows are reported as the "plain ERM step".

Random features / positives (the cost does not depend on the values). Run:

    python benchmarks/bench_invariance.py --quick            # seconds on a laptop CPU
    python benchmarks/bench_invariance.py --device cuda      # full shape on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from painvrl.config import EnvironmentsConfig, MaskConfig
from painvrl.distributed.collective import LocalCollective
from painvrl.distributed.sampling import EpochBatches, draw_negative_pool, make_generator
from painvrl.invariance.environments import _fits_of, train_environment_models
from painvrl.invariance.linear_models import LinearMaskModel, StackedEnvironmentModels
from painvrl.invariance.mask_models import EnvBatch
from painvrl.invariance.masks import mask_step, resolve_settings
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights
from painvrl.training.loop import Optimisers, step_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_backbone(n_users: int, n_items: int, n_pos: int, d: int, device: torch.device,
                  seed: int = 0) -> tuple[UltraGCN, np.ndarray]:
    rng = np.random.default_rng(seed)
    train = np.stack([rng.integers(0, n_users, n_pos), rng.integers(0, n_items, n_pos)], axis=1).astype(np.int64)
    features = rng.standard_normal((n_items, d), dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    b_u, b_i = degree_weights(train, n_users, n_items)
    torch.manual_seed(seed)
    model = UltraGCN(n_users, n_items, torch.from_numpy(features), FeatureProjection(d, 64), b_u, b_i)
    return model.to(device), train


def backbone_epochs(model: UltraGCN, train: np.ndarray, epochs: int, batch: int, n_neg: int, pool: int,
                    device: torch.device) -> float:
    """Seconds of ``epochs`` epochs of the project's backbone step (pool, lazy Adam on P/Q)."""
    opt = Optimisers(model, list(model.parameters()), 1e-3, sparse=True)
    train_t = torch.as_tensor(train)
    _sync(device)
    started = time.perf_counter()
    for epoch in range(epochs):
        for b in EpochBatches(len(train), batch, 0, epoch, phase="bench"):
            gen = make_generator(0, "bench-neg", epoch, b.step)
            pool_items, positions = draw_negative_pool(gen, b.global_size, n_neg, model.n_items, pool)
            rows = train_t[b.rows].to(device)
            pool_items, positions = pool_items.to(device), positions.to(device)
            opt.zero_grad()
            loss = step_loss(model, rows[:, 0], rows[:, 1], pool_items[positions], b.global_size, 1,
                             pool=pool_items, pool_positions=positions)
            loss.backward()
            opt.step()
    _sync(device)
    return time.perf_counter() - started


def bench_hei(args: argparse.Namespace, device: torch.device) -> None:
    model, train = make_backbone(args.users, args.items, args.positives, args.dim, device)
    n_envs, epochs = args.envs, args.env_epochs
    labels = np.random.default_rng(1).integers(0, n_envs, len(train))
    cfg = EnvironmentsConfig(n_envs=n_envs, env_epochs=epochs)
    backbone_epochs(model, train[: args.batch * 3], 1, args.batch, args.negatives, args.pool, device)  # warm-up
    t_backbone = backbone_epochs(model, train, epochs, args.batch, args.negatives, args.pool, device)

    def hei_iteration() -> tuple[float, float]:
        models = StackedEnvironmentModels(n_envs, model, torch.full((args.dim,), 0.5), 64)
        _sync(device)
        started = time.perf_counter()
        train_environment_models(models, train, labels, epochs, cfg.lr, args.batch, args.negatives, 0, (0, 0),
                                 LocalCollective(), negative_pool=args.pool)
        _sync(device)
        mid = time.perf_counter()
        _fits_of(models, train, "score", args.negatives, 0, (0, 0), LocalCollective())
        _sync(device)
        return mid - started, time.perf_counter() - mid

    hei_iteration()  # warm-up (allocator, first-call costs)
    t_train, t_relabel = hei_iteration()
    started = time.perf_counter()
    for env in range(n_envs):
        rows = train[labels == env]
        single = StackedEnvironmentModels(1, model, torch.full((args.dim,), 0.5), 64)
        train_environment_models(single, rows, np.zeros(len(rows), dtype=np.int64), epochs, cfg.lr, args.batch,
                                 args.negatives, 0, (env, 0), LocalCollective(),
                                 negative_pool=max(1, args.pool // n_envs))
    _sync(device)
    t_sequential = time.perf_counter() - started
    t_hei = t_train + t_relabel
    print(f"HEI, E={n_envs}, {epochs} epochs, {len(train)} positives, d={args.dim}, batch {args.batch}, "
          f"pool {args.pool}, device {device}")
    print(f"  backbone training ({epochs} epochs):        {t_backbone:8.2f} s")
    print(f"  HEI iteration (train {t_train:.2f} s + relabel {t_relabel:.2f} s): {t_hei:8.2f} s"
          f"  ratio {t_hei / t_backbone:.2f}x  (bar <= 2x)")
    print(f"  {n_envs} models one after another:        {t_sequential:8.2f} s"
          f"  batched / sequential {t_train / t_sequential:.2f}")


def _median_time(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_mask_step(args: argparse.Namespace, device: torch.device) -> None:
    model, train = make_backbone(args.users, args.items, args.positives, args.dim, device)
    per_env = args.batch // 2
    gen = make_generator(0, "bench-mask", 0)
    rows = torch.as_tensor(train[torch.randint(len(train), (2 * per_env,), generator=gen).numpy()]).to(device)
    pool: torch.Tensor | None
    positions: torch.Tensor | None
    if args.pool > 0:
        pool = torch.randint(model.n_items, (args.pool,), generator=gen).to(device)
        positions = torch.randint(args.pool, (2 * per_env, args.negatives), generator=gen).to(device)
        negatives = pool[positions]
        batches = [EnvBatch(rows[k * per_env:(k + 1) * per_env, 0], rows[k * per_env:(k + 1) * per_env, 1],
                            negatives[k * per_env:(k + 1) * per_env], per_env, pool,
                            positions[k * per_env:(k + 1) * per_env]) for k in range(2)]
    else:  # every positive draws its own negatives from the catalogue
        pool = positions = None
        negatives = torch.randint(model.n_items, (2 * per_env, args.negatives), generator=gen).to(device)
        batches = [EnvBatch(rows[k * per_env:(k + 1) * per_env, 0], rows[k * per_env:(k + 1) * per_env, 1],
                            negatives[k * per_env:(k + 1) * per_env], per_env) for k in range(2)]
    eps = torch.randn(args.dim, generator=gen)
    cfg = dataclasses.replace(MaskConfig(), penalty=args.penalty)
    settings = resolve_settings(cfg, cfg.sparsity_weight, cfg.irm_weight)
    mask_model = LinearMaskModel(model, 64, cfg.sigma, 0.01)
    opt = torch.optim.Adam(mask_model.trainable(), lr=1e-3)
    _, initial = mask_step(mask_model, opt, batches, eps, settings, LocalCollective(), None)
    t_pareto = _median_time(lambda: mask_step(mask_model, opt, batches, eps, settings, LocalCollective(), initial),
                            args.reps, device)
    t_erm = _median_time(lambda: mask_step(mask_model, opt, batches, eps, settings, LocalCollective(), initial,
                                           warmup=True), args.reps, device)
    bopt = Optimisers(model, list(model.parameters()), 1e-3, sparse=True)

    def backbone_step() -> None:
        bopt.zero_grad()
        loss = step_loss(model, rows[:, 0], rows[:, 1], negatives, len(rows), 1, pool=pool,
                         pool_positions=positions)
        loss.backward()
        bopt.step()

    t_backbone = _median_time(backbone_step, args.reps, device)
    print(f"Mask step, 2 environments x {per_env} positives, {args.penalty} + EPO, d={args.dim}, pool {args.pool}")
    print(f"  Pareto step:          {t_pareto * 1e3:8.2f} ms")
    print(f"  ERM-only mask step:   {t_erm * 1e3:8.2f} ms  Pareto / ERM {t_pareto / t_erm:.2f}x (bar <= 3x)")
    print(f"  backbone step:        {t_backbone * 1e3:8.2f} ms  Pareto / backbone {t_pareto / t_backbone:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shape (seconds on CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--users", type=int, default=36_000)
    parser.add_argument("--items", type=int, default=76_000)
    parser.add_argument("--positives", type=int, default=560_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--envs", type=int, default=10)
    parser.add_argument("--env-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--negatives", type=int, default=50)
    parser.add_argument("--pool", type=int, default=512)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--penalty", default=MaskConfig.penalty, help="the mask step's IRM penalty")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["hei", "mask"], default=None)
    args = parser.parse_args()
    if args.quick:
        args.users, args.items, args.positives, args.dim = 4_000, 8_000, 60_000, 128
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.only in (None, "hei"):
        bench_hei(args, device)
    if args.only in (None, "mask"):
        bench_mask_step(args, device)


if __name__ == "__main__":
    main()
