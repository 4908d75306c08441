"""Search efficiency: hypervolume after N trials, a sampler against random search, same budget and sampler seeds.

What runs: the study's search, driven through Optuna DIRECTLY (no Ray Tune, no MLflow) to stay affordable on 2
cores: ``optuna.create_study`` with the sampler built by painvrl.study.driver.build_sampler (TPE: multivariate,
n_startup_trials = max(3, N // 3); GP: GPSampler, same start-up; random: RandomSampler), the search space of
painvrl.study.space.DefineByRunSpace over the shipped default study's ``search`` section (environments.n_envs int
2-4, mask.sparsity_weight log 1e-5..1e-2, the mask preference: mask.pref_ood in [0.05, 0.95] with two mask
objectives), each trial's run config built by painvrl.study.space.trial_config and trained in-process by
painvrl.training.pipeline.run_pipeline. The objectives are the study's: (val.iid.recall@20, val.ood.recall@20),
both maximised, on the synthetic benchmark (default.yaml's base dataset), method painvrl.

Reduced budget (say so when quoting numbers): base config = default.yaml's base with the epochs below
(``--epochs``: train.epochs / painvrl.pretrain_epochs / mask.epochs; rounds and environment iterations as in
default.yaml unless ``--rounds``). The training seed is fixed (base.train.seed), so a configuration always gives
the same objectives: the repetitions vary the SAMPLER seed only, and configurations already trained in this run
are reused from a cache (TPE's random start-up trials coincide with random search's first trials for one seed).

Hypervolume (painvrl.study.front.hypervolume) is reported against two reference points: the origin, and the
erm baseline's point (the same base config with method erm: only gains over ERM in both objectives count).

    python benchmarks/bench_search_efficiency.py                    # 3 seeds x N=12, about 5-8 minutes on 2 cores
    python benchmarks/bench_search_efficiency.py --seeds 0 --trials 6   # quick look
    # the numbers behind the study's default sampler (12 seeds: two runs of 6, about 12 minutes each):
    python benchmarks/bench_search_efficiency.py --samplers gp random --trials 20 --seeds 0 1 2 3 4 5 --epochs 15 8 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

DEFAULT_STUDY = "default"
"""The shipped default study (painvrl/study/configs/default.yaml)."""
SAMPLERS = ("tpe", "random")
"""Default comparison: tpe against random; ``--samplers gp random`` compares the study's default sampler (gp)."""


class Objective:
    """Trains one configuration in-process; caches by the exact sampled parameters."""

    def __init__(self, spec: Any) -> None:
        from painvrl.data.registry import load_dataset

        self.spec = spec
        self.data = load_dataset(spec.base_config().dataset)
        self.cache: dict[str, list[float]] = {}
        self.seconds: list[float] = []

    def values(self, params: dict[str, Any], method: str | None = None) -> list[float]:
        from painvrl.distributed.collective import LocalCollective
        from painvrl.study.space import trial_config
        from painvrl.training.pipeline import run_pipeline
        from painvrl.training.results import flatten_metrics

        settings = dict(params) if method is None else {**params, "method": method}
        key = json.dumps(settings, sort_keys=True)
        if key not in self.cache:
            config = trial_config(self.spec, settings)
            config.scaling.num_workers = 0
            started = time.perf_counter()
            flat = flatten_metrics(run_pipeline(config, self.data, LocalCollective(), None).metrics)
            self.seconds.append(time.perf_counter() - started)
            self.cache[key] = [flat[k] for k in self.spec.metric_keys()]
        return self.cache[key]


def run_search(spec: Any, objective: Objective, sampler_name: str, seed: int, trials: int
               ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One study of ``trials`` trials; returns the objective points in trial order and the sampled params."""
    import dataclasses

    import optuna

    from painvrl.study.driver import build_sampler
    from painvrl.study.space import DefineByRunSpace

    run_spec = dataclasses.replace(spec, num_samples=trials,
                                   sampler=dataclasses.replace(spec.sampler, name=sampler_name, seed=seed))
    base = run_spec.base_config()
    space = DefineByRunSpace(run_spec, 2 + (base.mask.extra_objective != "none"))
    study = optuna.create_study(directions=run_spec.directions(), sampler=build_sampler(run_spec))
    points, sampled = [], []
    for _ in range(trials):
        trial = study.ask()
        constants = space(trial)
        params = {**trial.params, **constants}
        values = objective.values(params)
        study.tell(trial, values)
        points.append(values)
        sampled.append(params)
    return np.asarray(points, dtype=float), sampled


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.5f}"
    return f"{statistics.mean(values):.5f} ± {statistics.stdev(values):.5f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--trials", type=int, default=12, help="trials per search (N)")
    parser.add_argument("--epochs", type=int, nargs=3, default=[8, 4, 3], metavar=("TRAIN", "PRETRAIN", "MASK"),
                        help="train.epochs, painvrl.pretrain_epochs, mask.epochs (default: %(default)s; "
                             "default.yaml has 15 8 6)")
    parser.add_argument("--rounds", type=int, default=None, help="painvrl.rounds (default: default.yaml's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--samplers", nargs=2, default=list(SAMPLERS), metavar=("A", "B"),
                        choices=["tpe", "random", "gp", "nsga2"], help="the two samplers to compare (A vs B)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import optuna
    import torch

    from painvrl.study.front import hypervolume, non_dominated_mask
    from painvrl.study.spec import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    train_epochs, pretrain_epochs, mask_epochs = args.epochs
    overrides = ["storage_dir=/tmp/painvrl-bench-search", f"base.train.epochs={train_epochs}",
                 f"base.painvrl.pretrain_epochs={pretrain_epochs}", f"base.mask.epochs={mask_epochs}"]
    if args.rounds is not None:
        overrides.append(f"base.painvrl.rounds={args.rounds}")
    spec = load_study(DEFAULT_STUDY, overrides)
    keys, directions = spec.metric_keys(), spec.directions()
    objective = Objective(spec)

    started = time.perf_counter()
    erm = objective.values({}, method="erm")
    references = {"origin": [0.0] * len(keys), "erm": erm}
    samplers = tuple(args.samplers)
    results: dict[str, dict[int, np.ndarray]] = {name: {} for name in samplers}
    for seed in args.seeds:
        for name in samplers:
            points, _ = run_search(spec, objective, name, seed, args.trials)
            results[name][seed] = points
            print(f"  seed {seed} {name:<6} done ({len(objective.cache)} distinct runs, "
                  f"{time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    print(f"\nSearch efficiency: {len(args.seeds)} sampler seeds x N={args.trials} trials per sampler, synthetic "
          f"benchmark, method painvrl, objectives {keys} (maximise)")
    print(f"base: the shipped default study with train/pretrain/mask epochs {train_epochs}/{pretrain_epochs}/"
          f"{mask_epochs}" + (f", rounds {args.rounds}" if args.rounds is not None else "")
          + f"; Optuna driven directly (no Ray); {len(objective.cache)} distinct trainings, "
            f"{statistics.mean(objective.seconds):.1f} s each, {time.perf_counter() - started:.0f} s total")
    print(f"erm baseline point: {keys[0]}={erm[0]:.5f}, {keys[1]}={erm[1]:.5f}")

    all_points = np.concatenate([p for per in results.values() for p in per.values()])
    corr = float(np.corrcoef(all_points[:, 0], all_points[:, 1])[0, 1]) if len(all_points) > 2 else float("nan")
    print(f"objective ranges over all trials: {keys[0]} [{all_points[:, 0].min():.5f}, "
          f"{all_points[:, 0].max():.5f}], {keys[1]} [{all_points[:, 1].min():.5f}, {all_points[:, 1].max():.5f}], "
          f"Pearson r = {corr:.3f}; points beating erm in both: "
          f"{int(((all_points[:, 0] > erm[0]) & (all_points[:, 1] > erm[1])).sum())}/{len(all_points)}")
    union_front = all_points[non_dominated_mask(all_points, directions)]
    print(f"non-dominated points over all trials: {len(np.unique(union_front, axis=0))} (a trade-off needs >= 2)")

    print("\nper seed")
    header = f"{'seed':>4} {'sampler':<7} {'HV(origin)':>11} {'HV(erm)':>10} {'front':>6} " \
             f"{'best iid':>9} {'best ood':>9} {'HV(origin)@N/2':>15}"
    print(header)
    table: dict[str, dict[str, list[float]]] = {n: {"origin": [], "erm": [], "half": []} for n in samplers}
    for seed in args.seeds:
        for name in samplers:
            points = results[name][seed]
            hv_origin = hypervolume(points, references["origin"], directions)
            hv_erm = hypervolume(points, references["erm"], directions)
            half = hypervolume(points[: max(1, args.trials // 2)], references["origin"], directions)
            front = len(np.unique(points[non_dominated_mask(points, directions)], axis=0))
            table[name]["origin"].append(hv_origin)
            table[name]["erm"].append(hv_erm)
            table[name]["half"].append(half)
            print(f"{seed:>4} {name:<7} {hv_origin:>11.6f} {hv_erm:>10.6f} {front:>6} {points[:, 0].max():>9.5f} "
                  f"{points[:, 1].max():>9.5f} {half:>15.6f}")
    print("\nmean ± std over seeds")
    print(f"{'sampler':<7} {'HV(origin)':>22} {'HV(erm)':>22} {'HV(origin)@N/2':>22}")
    for name in samplers:
        print(f"{name:<7} {_mean_std(table[name]['origin']):>22} {_mean_std(table[name]['erm']):>22} "
              f"{_mean_std(table[name]['half']):>22}")
    a, b = samplers
    diffs = [x - y for x, y in zip(table[a]["origin"], table[b]["origin"], strict=True)]
    wins, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
    paired = ""
    if len(diffs) > 1 and statistics.stdev(diffs) > 0:
        t_stat = statistics.mean(diffs) / (statistics.stdev(diffs) / len(diffs) ** 0.5)
        paired = f"; paired mean difference {statistics.mean(diffs):+.6f}, t = {t_stat:.2f} ({len(diffs) - 1} df)"
    print(f"{a} > {b} (HV origin) in {wins}/{len(args.seeds)} seeds ({ties} ties){paired}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
