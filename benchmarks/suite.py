"""PaInvRL over a family of synthetic shifts: erm, oracle, invrl and painvrl with a preference sweep, on a grid
of benchmark configurations fixed in ``GRID`` (committed before any tuning on it).

Every configuration is the package's default synthetic benchmark with the overrides of its row, so each axis is
read against the default: the training strengths (same sign or flipped, weak or strong), the OOD strength, the
environment shares, the number of spurious vs invariant factors, warm vs cold-start IID and OOD, feature noise
and size. For each configuration and seed (``dataset.seed = train.seed = seed``; every method of a seed shares
its data, so differences are paired) the suite runs:

- ``erm``, ``oracle`` (the true invariant mask), ``invrl``;
- ``painvrl`` at pref_ood 0.1, 0.5 and 0.9;
- ``painvrl`` at pref_ood 0.9 with the TRUE environments (``environments.source=ground_truth``): when it closes
  the gap and HEI's run does not, environment identification is the weak link;
- any extra row of ``--extra NAME=override,override`` (e.g. another schedule or environment source).

Per configuration it reports the oracle/erm OOD ratio (is the shift meaningful?), the oracle's IID cost, and per
method the fraction of the erm-to-oracle OOD gap closed, the IID ratio to erm, mask AUC, environment ARI and the
wall time as a ratio to erm's. The summary counts the configurations on which painvrl at pref_ood 0.9 closes
>= 40% of the gap with mask AUC >= 0.85 (among those where the oracle's OOD recall is >= 1.2x erm's), and those
on which painvrl at pref_ood 0.1 keeps >= 95% of erm's IID recall.

Runs are appended to a JSON-lines file as they finish (``--out``), so an interrupted suite resumes where it
stopped and ``--report`` re-prints the tables from the file alone.

    PYTHONPATH=. .venv/bin/python benchmarks/suite.py --seeds 0 1 --jobs 2 --out suite.jsonl
    PYTHONPATH=. .venv/bin/python benchmarks/suite.py --report --out suite.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

SYN = "dataset.synthetic."
GRID: dict[str, list[str]] = {
    "default": [],
    "same sign, strong/weak": [f"{SYN}train_env_strengths=[2.5,0.8]", f"{SYN}ood_env_strength=-1.5",
                               f"{SYN}n_users=700", f"{SYN}n_items=900"],
    "same sign, weak": [f"{SYN}train_env_strengths=[0.8,0.4]"],
    "flipped, weak": [f"{SYN}train_env_strengths=[0.6,-0.6]"],
    "flipped, strong": [f"{SYN}train_env_strengths=[2.0,-1.5]", f"{SYN}ood_env_strength=-2.0"],
    "OOD strength -0.4": [f"{SYN}ood_env_strength=-0.4"],
    "OOD strength -2.0": [f"{SYN}ood_env_strength=-2.0"],
    "equal shares": [f"{SYN}train_env_shares=[1.0,1.0]"],
    "shares 9:1": [f"{SYN}train_env_shares=[9.0,1.0]"],
    "8 spurious, 2 invariant factors": [f"{SYN}n_spurious_factors=8", f"{SYN}n_invariant_factors=2"],
    "2 spurious, 6 invariant factors": [f"{SYN}n_spurious_factors=2", f"{SYN}n_invariant_factors=6"],
    "warm IID": [f"{SYN}iid_new_items=0"],
    "warm OOD": [f"{SYN}ood_new_items=0"],
    "feature noise 0.4": [f"{SYN}feature_noise=0.4"],
    "1500 users, 2000 items": [f"{SYN}n_users=1500", f"{SYN}n_items=2000"],
}
"""The benchmark family: name -> overrides of the default synthetic benchmark."""

METHODS: dict[str, list[str]] = {
    "erm": ["method=erm"],
    "oracle": ["method=oracle"],
    "invrl": ["method=invrl"],
    "painvrl 0.1": ["method=painvrl", "mask.pref_ood=0.1"],
    "painvrl 0.5": ["method=painvrl", "mask.pref_ood=0.5"],
    "painvrl 0.9": ["method=painvrl", "mask.pref_ood=0.9"],
    "painvrl 0.9 true envs": ["method=painvrl", "mask.pref_ood=0.9", "environments.source=ground_truth"],
}
"""The rows every configuration runs: name -> overrides."""

SHIFT_RATIO, GAP_BAR, AUC_BAR, IID_BAR = 1.2, 0.4, 0.85, 0.95


def run_one(config_name: str, method: str, overrides: list[str], seed: int, threads: int) -> dict[str, Any]:
    """One pipeline run in this process; the numbers the tables need."""
    import torch

    from painvrl.config import load_config
    from painvrl.data.synthetic import make_synthetic
    from painvrl.training.pipeline import run_pipeline

    torch.set_num_threads(threads)
    logging.disable(logging.WARNING)
    config = load_config(None, ["train.progress=false", f"dataset.seed={seed}", f"train.seed={seed}",
                                *GRID[config_name], *overrides])
    started = time.perf_counter()
    metrics = run_pipeline(config, make_synthetic(config.dataset)).metrics
    return {"config": config_name, "method": method, "seed": seed, "overrides": overrides,
            "iid": float(metrics["test"]["iid"]["recall@20"]), "ood": float(metrics["test"]["ood"]["recall@20"]),
            "auc": metrics["mask"].get("auc"), "ari": metrics["environments"].get("ari"),
            "spurious_open": metrics["mask"].get("spurious_open"), "seconds": time.perf_counter() - started,
            "config_hash": config.config_hash(), "git_commit": metrics["provenance"].get("git_commit")}


def load_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def cell(values: list[float], digits: int = 2) -> str:
    """mean ± standard error (paired quantities are computed per seed first)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "-"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    se = float(np.std(finite, ddof=1)) / math.sqrt(len(finite))
    return f"{np.mean(finite):.{digits}f} ± {se:.{digits}f}"


def sem(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(finite, ddof=1)) / math.sqrt(len(finite)) if len(finite) > 1 else 0.0


def per_seed(runs: list[dict[str, Any]], config: str, method: str) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in runs if r["config"] == config and r["method"] == method}


def config_rows(runs: list[dict[str, Any]], config: str, methods: list[str], time_base: str = "erm") -> dict[str, Any]:
    """Per-method paired quantities of one configuration (per seed, then mean ± SE); wall times are divided by
    row ``time_base``'s (erm's own by default; a row timed in the same session as the others is fairer)."""
    erm, oracle = per_seed(runs, config, "erm"), per_seed(runs, config, "oracle")
    timed = per_seed(runs, config, time_base) or erm
    seeds = sorted(erm.keys() & oracle.keys())
    out: dict[str, Any] = {
        "seeds": seeds,
        "shift": [oracle[s]["ood"] / erm[s]["ood"] if erm[s]["ood"] > 0 else math.nan for s in seeds],
        "oracle_iid_cost": [1 - oracle[s]["iid"] / erm[s]["iid"] for s in seeds],
        "erm_ood": [erm[s]["ood"] for s in seeds], "oracle_ood": [oracle[s]["ood"] for s in seeds],
        "methods": {},
    }
    for method in methods:
        rows = per_seed(runs, config, method)
        common = [s for s in seeds if s in rows]
        gap = {s: oracle[s]["ood"] - erm[s]["ood"] for s in common}
        out["methods"][method] = {
            "n": len(common),
            "closed": [(rows[s]["ood"] - erm[s]["ood"]) / gap[s] if gap[s] > 0 else math.nan for s in common],
            "iid_ratio": [rows[s]["iid"] / erm[s]["iid"] for s in common],
            "auc": [rows[s]["auc"] for s in common], "ari": [rows[s]["ari"] for s in common],
            "ood": [rows[s]["ood"] for s in common], "iid": [rows[s]["iid"] for s in common],
            "time_ratio": [rows[s]["seconds"] / timed[s]["seconds"] for s in common if s in timed],
        }
    return out


COMPACT = [("painvrl 0.9", "closed"), ("painvrl 0.9, 60 mask epochs", "closed"), ("painvrl 0.9 true envs", "closed"),
           ("painvrl 0.9 eiil", "closed"), ("invrl", "closed"), ("painvrl 0.1", "iid_ratio"), ("painvrl 0.9", "auc"),
           ("painvrl 0.9", "ari")]
"""Columns of the one-line-per-configuration table: (row, quantity)."""


def compact_report(runs: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """One line per configuration: the shift, then the ``COMPACT`` quantities of the rows that ran."""
    columns = [(m, q) for m, q in COMPACT if m in methods]
    names = {"closed": "gap closed", "iid_ratio": "IID ratio", "auc": "mask AUC", "ari": "env ARI"}
    lines = ["| configuration | oracle/erm OOD | " + " | ".join(f"{m}: {names[q]}" for m, q in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for config in GRID:
        rows = config_rows(runs, config, [m for m, _ in columns])
        if rows["seeds"]:
            cells = [cell(rows["methods"][m][q]) for m, q in columns]
            lines.append(f"| {config} | {cell(rows['shift'])} | " + " | ".join(cells) + " |")
    return lines


def report(runs: list[dict[str, Any]], methods: list[str], sweep: str = "painvrl {pref}",
           time_base: str = "erm") -> list[str]:
    """The per-configuration table and the bar counts; the bars read the rows ``sweep.format(pref=p)``."""
    lines = ["| configuration | oracle/erm OOD | oracle IID cost | method | gap closed | IID ratio | mask AUC | "
             "env ARI | time / erm |", "|---|---|---|---|---|---|---|---|---|"]
    meaningful, gap_ok, iid_ok, total, traced, fronts = 0, 0, 0, 0, 0, 0
    failing: list[str] = []
    no_front: list[str] = []
    for config in GRID:
        rows = config_rows(runs, config, methods, time_base)
        if not rows["seeds"]:
            continue
        total += 1
        shift = mean(rows["shift"])
        first = True
        for method in methods:
            m = rows["methods"][method]
            if m["n"] == 0 or method in ("erm", "oracle", time_base):
                continue
            head = (f"| {config} | {cell(rows['shift'])} | {cell(rows['oracle_iid_cost'])} |" if first
                    else "| | | |")
            first = False
            lines.append(f"{head} {method} | {cell(m['closed'])} | {cell(m['iid_ratio'])} | {cell(m['auc'])} | "
                         f"{cell(m['ari'])} | {cell(m['time_ratio'], 1)} |")
        high, low = rows["methods"].get(sweep.format(pref="0.9")), rows["methods"].get(sweep.format(pref="0.1"))
        if high and high["n"] and shift >= SHIFT_RATIO:
            meaningful += 1
            passed = mean(high["closed"]) >= GAP_BAR and mean(high["auc"]) >= AUC_BAR
            gap_ok += passed
            if not passed:
                failing.append(config)
        if low and low["n"]:
            iid_ok += mean(low["iid_ratio"]) >= IID_BAR
        points = [rows["methods"].get(sweep.format(pref=p)) for p in ("0.1", "0.5", "0.9")]
        if shift >= SHIFT_RATIO and all(m and m["n"] for m in points):
            traced += 1
            oods = [m["ood"] for m in points if m]
            monotone = all(mean(hi) >= mean(lo) - max(sem(lo), sem(hi)) for lo, hi in itertools.pairwise(oods))
            half = max(mean(m["closed"]) for m in points if m) >= 0.5
            fronts += monotone and half
            if not (monotone and half):
                no_front.append(config)
    lines += ["", f"bars read the rows {sweep.format(pref='P')!r}",
              f"painvrl at pref_ood 0.9 closes >= {GAP_BAR:.0%} of the gap with mask AUC >= {AUC_BAR} on "
              f"{gap_ok} of {meaningful} configurations where the oracle's OOD recall is >= {SHIFT_RATIO}x erm's",
              f"painvrl at pref_ood 0.1 keeps >= {IID_BAR:.0%} of erm's IID recall on {iid_ok} of {total} "
              "configurations"]
    lines.append(f"the preference sweep 0.1 -> 0.5 -> 0.9 traces a front (OOD recall monotone within the larger "
                 f"standard error, some point closing >= 50% of the gap) on {fronts} of {traced} configurations "
                 "with a meaningful shift")
    if failing:
        lines.append("gap bar missed: " + "; ".join(failing))
    if no_front:
        lines.append("no front: " + "; ".join(no_front))
    seconds = sum(r["seconds"] for r in runs)
    lines.append(f"{len(runs)} runs, {seconds / 60:.0f} core-minutes of training")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=list(GRID), help="subset of GRID (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="subset of the rows")
    parser.add_argument("--extra", action="append", default=[],
                        help="an extra row NAME=override,override (e.g. 'short=method=painvrl,mask.epochs=10')")
    parser.add_argument("--set", action="append", default=[],
                        help="override applied to every run (a row's own overrides win)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: 2 cores / --jobs)")
    parser.add_argument("--out", type=Path, default=Path(".painvrl/suite.jsonl"))
    parser.add_argument("--report", action="store_true", help="only print the tables of --out")
    parser.add_argument("--compact", action="store_true", help="with --report: one line per configuration")
    parser.add_argument("--time-base", default="erm", help="row whose wall time the time ratios divide by")
    parser.add_argument("--sweep", default="painvrl {pref}",
                        help="row names the bars read, with {pref} for 0.1 / 0.5 / 0.9 (e.g. 'painvrl {pref}, short')")
    args = parser.parse_args()
    for name in args.configs:
        if name not in GRID:
            parser.error(f"--configs: unknown configuration {name!r} (known: {', '.join(GRID)})")
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown rows {unknown} (known: {', '.join(METHODS)}; others go in --extra)")
    rows = {name: METHODS[name] for name in args.methods}
    for spec in args.extra:
        name, _, overrides = spec.partition("=")
        if not overrides:
            parser.error(f"--extra {spec!r}: expected NAME=override,override")
        rows[name] = overrides.split(",")
    if args.report:
        runs = load_runs(args.out)
        tables = compact_report(runs, list(rows)) if args.compact else report(runs, list(rows), args.sweep,
                                                                               args.time_base)
        print("\n".join(tables))
        return
    done = {(r["config"], r["method"], r["seed"]) for r in load_runs(args.out)}
    todo = [(c, m, s) for s in args.seeds for c in args.configs for m in rows if (c, m, s) not in done]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, 2 // max(args.jobs, 1))
    print(f"{len(todo)} runs to do ({len(done)} already in {args.out})", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool, args.out.open("a") as sink:
        futures = {pool.submit(run_one, c, m, [*args.set, *rows[m]], s, threads): (c, m, s) for c, m, s in todo}
        for index, future in enumerate(as_completed(futures), 1):
            result = future.result()
            sink.write(json.dumps(result) + "\n")
            sink.flush()
            c, m, s = futures[future]
            print(f"[{index}/{len(todo)}] {c} / {m} / seed {s}: IID {result['iid']:.4f} OOD {result['ood']:.4f} "
                  f"({result['seconds']:.0f} s)", flush=True)
    print("\n".join(report(load_runs(args.out), list(rows), args.sweep, args.time_base)))


if __name__ == "__main__":
    main()
