"""Benchmark: per-step cost of the Pareto solvers against the floor of computing the Gram matrix alone.

For each step the mask trainer needs alpha from m objective gradients of p parameters (p = d + k_f * d, e.g.
d = 4,096 features and k_f = 64 gives ~266k). The floor is ``G @ G.T`` in float64; the solvers add an
m x m problem on top. Also compares the EPO two-objective closed form with scipy's HiGHS on the same LPs
(objective agreement and time) and MGDA's exact active-set solver with away-step Frank-Wolfe for m = 3..5.

Timings are medians over repeats. Usage: ``python benchmarks/bench_pareto_solvers.py [--quick]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from painvrl.invariance.pareto import (
    build_epo_lp,
    gram,
    mgda_from_gram,
    solve_lp_highs,
    solve_lp_two,
    solve_weights,
)


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call (the median resists noise from other processes on a shared machine)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and instances")
    args = parser.parse_args()
    torch.set_num_threads(2)
    repeats = 5 if args.quick else 30
    n_lp = 200 if args.quick else 2000
    rng = np.random.default_rng(0)
    results: dict[str, object] = {}

    p = 4096 + 64 * 4096
    grads = torch.randn(2, p)
    losses = torch.tensor([1.0, 0.5])
    pref = torch.tensor([0.5, 0.5])
    results["p"] = p
    _time(partial(gram, grads), repeats)  # warm-up: first float64 copies page in fresh memory
    results["gram_floor_ms"] = 1e3 * _time(partial(gram, grads), repeats)
    for solver in ("mgda", "epo", "linear"):
        results[f"solve_weights_{solver}_ms"] = 1e3 * _time(
            partial(solve_weights, solver, losses, grads, pref), repeats
        )

    lps = []
    for i in range(n_lp):
        g = rng.normal(size=(2, 8))
        r = rng.dirichlet(np.ones(2))
        ls = (1.0 / r) * (1.0 + 1e-5 * rng.normal(size=2)) if i % 2 else rng.uniform(0.1, 3.0, size=2)
        lps.append(build_epo_lp(torch.tensor(ls), torch.tensor(g @ g.T), torch.tensor(r))[0])
    start = time.perf_counter()
    closed = [solve_lp_two(lp) for lp in lps]
    t_closed = (time.perf_counter() - start) / n_lp
    start = time.perf_counter()
    highs = [solve_lp_highs(lp) for lp in lps]
    t_highs = (time.perf_counter() - start) / n_lp
    gaps = [
        abs(float(lp.objective @ a) - float(lp.objective @ b))
        for lp, a, b in zip(lps, closed, highs, strict=True)
        if a is not None and b is not None
    ]
    results["epo_lp_closed_form_us"] = 1e6 * t_closed
    results["epo_lp_highs_us"] = 1e6 * t_highs
    results["epo_lp_max_objective_gap"] = max(gaps)

    for m in (3, 4, 5):
        g = rng.normal(size=(m, 16))
        c = torch.tensor(g @ g.T)
        results[f"mgda_exact_m{m}_us"] = 1e6 * _time(partial(mgda_from_gram, c, method="exact"), repeats)
        results[f"mgda_frank_wolfe_m{m}_us"] = 1e6 * _time(partial(mgda_from_gram, c, method="frank_wolfe"), repeats)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
