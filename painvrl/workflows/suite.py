"""``painvrl suite``: PaInvRL over a family of synthetic shifts. erm, oracle, invrl and painvrl with a preference
sweep, on a grid of benchmark configurations fixed in ``GRID`` (committed before any tuning on it).

Every configuration is the package's default synthetic benchmark with the overrides of its row, so each axis is
read against the default: the training strengths (same sign or flipped, weak or strong), the OOD strength, the
environment shares, the number of spurious vs invariant factors, warm vs cold-start IID and OOD, feature noise
and size. For each configuration and seed (``dataset.seed = train.seed = seed``; every method of a seed shares
its data, so differences are paired) the suite runs the rows of ``ROWS``:

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
stopped and ``--report`` re-prints the tables from the file alone; with ``--mlflow`` each run is also logged to
an MLflow experiment.

    painvrl suite --seeds 0 1 --jobs 2 --out suite.jsonl
    painvrl suite --report --out suite.jsonl
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from painvrl.errors import PainvrlInputError
from painvrl.workflows import grid

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

ROWS: dict[str, list[str]] = {
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
ROLE = "suite"
cell = functools.partial(grid.mean_se, digits=2)
"""mean ± standard error of a table cell (paired quantities are computed per seed first)."""


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
    """The runs appended to the JSON-lines file ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        shift = grid.finite_mean(rows["shift"])
        first = True
        for method in methods:
            m = rows["methods"][method]
            if m["n"] == 0 or method in ("erm", "oracle", time_base):
                continue
            head = (f"| {config} | {cell(rows['shift'])} | {cell(rows['oracle_iid_cost'])} |" if first
                    else "| | | |")
            first = False
            lines.append(f"{head} {method} | {cell(m['closed'])} | {cell(m['iid_ratio'])} | {cell(m['auc'])} | "
                         f"{cell(m['ari'])} | {cell(m['time_ratio'], digits=1)} |")
        high, low = rows["methods"].get(sweep.format(pref="0.9")), rows["methods"].get(sweep.format(pref="0.1"))
        if high and high["n"] and shift >= SHIFT_RATIO:
            meaningful += 1
            passed = grid.finite_mean(high["closed"]) >= GAP_BAR and grid.finite_mean(high["auc"]) >= AUC_BAR
            gap_ok += passed
            if not passed:
                failing.append(config)
        if low and low["n"]:
            iid_ok += grid.finite_mean(low["iid_ratio"]) >= IID_BAR
        points = [rows["methods"].get(sweep.format(pref=p)) for p in ("0.1", "0.5", "0.9")]
        if shift >= SHIFT_RATIO and all(m and m["n"] for m in points):
            traced += 1
            oods = [m["ood"] for m in points if m]
            monotone = all(grid.finite_mean(hi) >= grid.finite_mean(lo) - max(grid.standard_error(lo),
                                                                              grid.standard_error(hi))
                           for lo, hi in itertools.pairwise(oods))
            half = max(grid.finite_mean(m["closed"]) for m in points if m) >= 0.5
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=list(GRID), help="subset of GRID (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(ROWS), help="subset of the rows (default: all)")
    parser.add_argument("--extra", action="append", default=[],
                        help="an extra row NAME=override,override (e.g. 'short=method=painvrl,mask.epochs=10')")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every run (a row's own overrides win)")
    parser.add_argument("--jobs", type=int, default=1, help="concurrent runs (processes)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (0: the machine's cores divided by --jobs)")
    parser.add_argument("--out", type=Path, default=Path(".painvrl/suite.jsonl"),
                        help="JSON-lines file the runs are appended to (default: %(default)s)")
    parser.add_argument("--mlflow", default=None, help="also log every run to this MLflow tracking URI")
    parser.add_argument("--experiment", default="suite", help="MLflow experiment of --mlflow (default: %(default)s)")
    parser.add_argument("--report", action="store_true", help="only print the tables of --out")
    parser.add_argument("--compact", action="store_true", help="with --report: one line per configuration")
    parser.add_argument("--time-base", default="erm", help="row whose wall time the time ratios divide by")
    parser.add_argument("--sweep", default="painvrl {pref}",
                        help="row names the bars read, with {pref} for 0.1 / 0.5 / 0.9 (e.g. 'painvrl {pref}, short')")


def selected_rows(args: argparse.Namespace) -> dict[str, list[str]]:
    """The rows to run or report: ``--methods`` of ``ROWS`` plus every ``--extra``."""
    for name in args.configs:
        if name not in GRID:
            raise PainvrlInputError(f"suite --configs: unknown configuration {name!r} (known: {', '.join(GRID)})")
    unknown = [name for name in args.methods if name not in ROWS]
    if unknown:
        raise PainvrlInputError(f"suite --methods: unknown rows {unknown} (known: {', '.join(ROWS)}; others go in "
                                "--extra)")
    rows = {name: ROWS[name] for name in args.methods}
    for spec in args.extra:
        name, _, overrides = spec.partition("=")
        if not overrides:
            raise PainvrlInputError(f"suite --extra {spec!r}: expected NAME=override,override")
        rows[name] = overrides.split(",")
    return rows


def log_run(tracking_uri: str, experiment_id: str, run: dict[str, Any]) -> str:
    tags = {"painvrl.role": ROLE, "painvrl.configuration": run["config"], "painvrl.method": run["method"],
            "painvrl.git_commit": str(run["git_commit"])}
    params = {"seed": run["seed"], "config_hash": run["config_hash"], "configuration": run["config"],
              "method": run["method"], "overrides": ",".join(run["overrides"])}
    metrics = {key: run[key] for key in ("iid", "ood", "auc", "ari", "spurious_open", "seconds")}
    return grid.log_run(tracking_uri, experiment_id, f"{run['config']} / {run['method']} / s{run['seed']}", tags,
                        params, metrics)


def run(args: argparse.Namespace) -> int:
    rows = selected_rows(args)
    if args.report:
        runs = load_runs(args.out)
        print("\n".join(compact_report(runs, list(rows)) if args.compact
                        else report(runs, list(rows), args.sweep, args.time_base)))
        return 0
    done = {(r["config"], r["method"], r["seed"]) for r in load_runs(args.out)}
    todo = [(c, m, [*args.overrides, *rows[m]], s) for s in args.seeds for c in args.configs for m in rows
            if (c, m, s) not in done]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    experiment_id = "" if not (todo and args.mlflow) else grid.ensure_experiment(
        args.mlflow, args.experiment, args.out.parent.resolve() / "suite-artifacts")
    print(f"{len(todo)} runs to do ({len(done)} already in {args.out})", flush=True)
    with args.out.open("a") as sink:
        for index, (task, result) in enumerate(grid.run_grid(run_one, todo, args.jobs, threads), 1):
            sink.write(json.dumps(result) + "\n")
            sink.flush()
            if args.mlflow:
                log_run(args.mlflow, experiment_id, result)
            c, m, _, s = task
            print(f"[{index}/{len(todo)}] {c} / {m} / seed {s}: IID {result['iid']:.4f} OOD {result['ood']:.4f} "
                  f"({result['seconds']:.0f} s)", flush=True)
    print("\n".join(report(load_runs(args.out), list(rows), args.sweep, args.time_base)))
    return 0
