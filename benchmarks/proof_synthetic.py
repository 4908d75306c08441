"""The synthetic benchmark's evidence for PaInvRL: erm, oracle, invrl, painvrl and a preference sweep, over seeds.

Every method runs in-process through :func:`painvrl.training.pipeline.run_pipeline` on the default config (plus
``--set`` overrides), for each seed (``dataset.seed = train.seed = seed``). Prints a table of mean ± std over
seeds of IID / OOD test recall@20, mask ROC-AUC against the true invariant dims and environment ARI, then
PASS / FAIL for five checks of what the method claims:

- shift: the oracle (true invariant mask) reaches >= 1.2 x erm's OOD recall, so the benchmark has a real OOD gap;
- gap closed: painvrl closes >= half of the erm-to-oracle OOD gap and keeps IID >= 0.95 x erm IID;
- mask ranking: painvrl's mask ranks the invariant dims above the spurious ones (ROC-AUC >= 0.9; ARI reported);
- front: pref_ood in {0.1, 0.5, 0.9}: OOD rises and IID falls as pref_ood grows (each step within noise = the
  larger standard error of the pair; end to end strictly);
- vs invrl: painvrl OOD >= invrl OOD (within noise) at IID >= 0.95 x invrl IID.

Three diagnostic rows: ``painvrl known envs`` (environments.source=ground_truth: IRM with the true
environments) shows how much of a shortfall is environment identification's; ``painvrl no IRM`` (linear solver,
irm_weight 0: the ERM objective and the sparsity term alone) shows how much of painvrl's OOD gain the invariance
objective makes; ``painvrl last round`` (painvrl.mask_average=last) shows what averaging the rounds' gate logits
adds.

The "sel. epoch" column is the final model's selected (best validation) epoch. The default benchmark is
cold-start on both sides: OOD (``dataset.synthetic.ood_new_items=0.25``: the OOD environment clicks only items
released there, and the OOD splits are ranked among them) and IID (``dataset.synthetic.iid_new_items=0.15``:
val/test are clicks of the training environments on items held out of training, ranked among them), so IID and
OOD both rank new items from their features, without and with the shift. Its majority training environment
(strength 1.1) makes the spurious dims worth a little IID recall, so invariance has an IID cost that the
preference sweep can show;
``train.patience`` 30 trains to the end (the held-out items' validation curve is flat for about 8 epochs).
``--set dataset.synthetic.iid_new_items=0 --set 'dataset.synthetic.train_env_strengths=[1.0,-1.0]'
--set train.patience=5`` gives the warm-IID variant, where invariance costs no IID recall.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/proof_synthetic.py [--seeds 0 1 2] [--jobs 2]
       [--set mask.penalty=vrex ...] [--json out.json]
       PYTHONPATH=. .venv/bin/python benchmarks/proof_synthetic.py --from-json a.json b.json   # pool saved runs
       PYTHONPATH=. .venv/bin/python benchmarks/proof_synthetic.py --from-json a.json --against c.json
           # and, per row, the paired difference of a.json's runs minus c.json's (another setting, same seeds)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RUNS: list[tuple[str, list[str]]] = [
    ("erm", ["method=erm"]),
    ("oracle", ["method=oracle"]),
    ("invrl", ["method=invrl"]),
    ("painvrl", ["method=painvrl"]),
    ("painvrl pref_ood=0.1", ["method=painvrl", "mask.pref_ood=0.1"]),
    ("painvrl pref_ood=0.9", ["method=painvrl", "mask.pref_ood=0.9"]),
    # Diagnostic: IRM with the TRUE environments (environments.source=ground_truth). Separates what
    # HEI misses from what IMG and the final model miss.
    ("painvrl known envs", ["method=painvrl", "environments.source=ground_truth"]),
    # Diagnostic: the same mask learning without the IRM objective (sparsity alone).
    ("painvrl no IRM", ["method=painvrl", "mask.solver=linear", "mask.irm_weight=0"]),
    # Diagnostic: the last round's mask instead of the mean of the rounds' gate logits (the plain
    # outer loop's m <- IMG(labels)), so the table shows what the averaging adds.
    ("painvrl last round", ["method=painvrl", "painvrl.mask_average=last"]),
]


def run_one(name: str, overrides: list[str], seed: int, threads: int) -> dict[str, Any]:
    """One pipeline run; returns the numbers the table needs."""
    import torch

    from painvrl.config import load_config
    from painvrl.data.synthetic import make_synthetic
    from painvrl.training.pipeline import run_pipeline

    torch.set_num_threads(threads)
    logging.disable(logging.WARNING)
    config = load_config(None, ["train.progress=false", f"dataset.seed={seed}", f"train.seed={seed}", *overrides])
    started = time.perf_counter()
    metrics = run_pipeline(config, make_synthetic(config.dataset)).metrics
    test = metrics["test"]
    return {"name": name, "seed": seed, "overrides": overrides, "iid": float(test["iid"]["recall@20"]),
            "ood": float(test["ood"]["recall@20"]), "auc": metrics["mask"].get("auc"),
            "auc_logits": metrics["mask"].get("auc_logits"),
            "ari": metrics["environments"].get("ari"), "density": metrics["mask"].get("density"),
            "spurious_open": metrics["mask"].get("spurious_open"),
            "invariant_open": metrics["mask"].get("invariant_open"),
            "epoch": metrics["selection"].get("epoch"), "seconds": time.perf_counter() - started}


def stats(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def sem(rows: list[dict[str, Any]], key: str) -> float:
    _, sd = stats(rows, key)
    return sd / math.sqrt(max(len(rows), 1))


def fmt(rows: list[dict[str, Any]], key: str, digits: int = 4) -> str:
    mean, sd = stats(rows, key)
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def checks(by: dict[str, list[dict[str, Any]]]) -> list[tuple[str, bool, str]]:
    """PASS/FAIL per check with the numbers behind it."""
    m = {name: {k: stats(rows, k)[0] for k in ("iid", "ood", "auc", "auc_logits", "ari")}
         for name, rows in by.items()}
    out = []
    erm, oracle, pai, inv = m["erm"], m["oracle"], m["painvrl"], m["invrl"]
    out.append(("shift: oracle OOD >= 1.2 x erm OOD", oracle["ood"] >= 1.2 * erm["ood"],
                f"oracle {oracle['ood']:.4f} vs erm {erm['ood']:.4f}"))
    gap = oracle["ood"] - erm["ood"]
    closed = (pai["ood"] - erm["ood"]) / gap if gap > 0 else math.nan
    ok_b = closed >= 0.5 and pai["iid"] >= 0.95 * erm["iid"]
    out.append(("gap closed: painvrl closes >= 1/2 OOD gap, IID >= 95% erm", bool(ok_b),
                f"gap closed {closed:.2f}, IID ratio {pai['iid'] / erm['iid']:.2f}"))
    out.append(("mask ranking: painvrl mask AUC >= 0.9 (clamped mask, ties count 1/2)", bool(pai["auc"] >= 0.9),
                f"AUC {pai['auc']:.3f}, ARI {pai['ari']:.3f}"))
    out.append(("mask ranking (logits): painvrl gate-logit AUC >= 0.9 (the same ranking, clamp ties broken)",
                bool(pai["auc_logits"] >= 0.9), f"AUC {pai['auc_logits']:.3f}"))
    sweep = [by["painvrl pref_ood=0.1"], by["painvrl"], by["painvrl pref_ood=0.9"]]
    ok_d = True
    for lo, hi in itertools.pairwise(sweep):
        tol_ood = max(sem(lo, "ood"), sem(hi, "ood"))
        tol_iid = max(sem(lo, "iid"), sem(hi, "iid"))
        ok_d &= stats(hi, "ood")[0] >= stats(lo, "ood")[0] - tol_ood
        ok_d &= stats(hi, "iid")[0] <= stats(lo, "iid")[0] + tol_iid
    ok_d &= stats(sweep[2], "ood")[0] > stats(sweep[0], "ood")[0]
    ok_d &= stats(sweep[2], "iid")[0] < stats(sweep[0], "iid")[0]
    out.append(("front: pref_ood 0.1 -> 0.5 -> 0.9: OOD up, IID down", bool(ok_d),
                "OOD " + " / ".join(f"{stats(s, 'ood')[0]:.4f}" for s in sweep)
                + "; IID " + " / ".join(f"{stats(s, 'iid')[0]:.4f}" for s in sweep)))
    tol = max(sem(by["painvrl"], "ood"), sem(by["invrl"], "ood"))
    ok_e = pai["ood"] >= inv["ood"] - tol and pai["iid"] >= 0.95 * inv["iid"]
    out.append(("vs invrl: painvrl OOD >= invrl OOD at comparable IID", bool(ok_e),
                f"painvrl {pai['iid']:.4f}/{pai['ood']:.4f} vs invrl {inv['iid']:.4f}/{inv['ood']:.4f} (IID/OOD)"))
    return out


PAIRS: list[tuple[str, str]] = [
    ("oracle", "erm"), ("painvrl", "erm"), ("painvrl", "invrl"),
    ("painvrl", "painvrl pref_ood=0.1"), ("painvrl pref_ood=0.9", "painvrl"),
    ("painvrl pref_ood=0.9", "painvrl pref_ood=0.1"),
    ("painvrl", "painvrl last round"),
]


def paired(by: dict[str, list[dict[str, Any]]], a: str, b: str, key: str) -> tuple[float, float, int]:
    """Mean and standard error of the per-seed difference ``a - b`` over the seeds both rows ran.

    Every row of one seed shares that seed's data (the same world, splits and test sets), so the per-seed
    difference cancels the world-to-world spread that dominates each row's own standard deviation."""
    left = {r["seed"]: r[key] for r in by[a] if r.get(key) is not None}
    right = {r["seed"]: r[key] for r in by[b] if r.get(key) is not None}
    diffs = np.array([left[s] - right[s] for s in sorted(left.keys() & right.keys())], dtype=np.float64)
    if len(diffs) < 2:
        return (float(diffs.mean()) if len(diffs) else math.nan), math.nan, len(diffs)
    return float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(len(diffs))), len(diffs)


def paired_lines(by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per comparison: per-seed paired differences of IID and OOD recall@20 (reported, not checked)."""
    lines = ["paired per-seed differences, mean ± standard error (t = mean / SE):"]
    for a, b in PAIRS:
        if not by[a] or not by[b]:  # runs saved before a row existed
            continue
        cells = []
        for key in ("iid", "ood"):
            mean, se, n = paired(by, a, b, key)
            t = mean / se if se and not math.isnan(se) else math.nan
            cells.append(f"{key.upper()} {mean:+.4f} ± {se:.4f} (t {t:+.1f})")
        lines.append(f"  {a:<21} - {b:<21} {cells[0]:<30} {cells[1]:<30} n={n}")
    return lines


def against_lines(by: dict[str, list[dict[str, Any]]], other: list[dict[str, Any]]) -> list[str]:
    """Per row, the paired per-seed difference of these runs minus ``other`` (the same rows under another
    setting, on the seeds both ran): IID and OOD recall@20, mask AUC and environment ARI."""
    lines = ["per row, these runs minus the --against runs, paired per seed (mean ± standard error):"]
    for name, _ in RUNS:
        theirs = [r for r in other if r["name"] == name]
        if not by[name] or not theirs:
            continue
        both = {"these": by[name], "against": theirs}
        cells, seeds = [], 0
        for key in ("iid", "ood", "auc", "ari"):
            mean, se, n = paired(both, "these", "against", key)
            seeds = n if key == "ood" else seeds
            if n:
                cells.append(f"{key.upper()} {mean:+.4f} ± {se:.4f}")
        lines.append(f"  {name:<21} {'  '.join(cells)}  n={seeds}")
    return lines


def diagnosis(by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Gap closed, IID ratio and mask AUC of the diagnostic rows (true environments; no IRM objective)."""
    erm, oracle = stats(by["erm"], "ood")[0], stats(by["oracle"], "ood")[0]
    gap = oracle - erm
    lines = []
    for name, what in (("painvrl known envs", "with the TRUE environments"),
                       ("painvrl no IRM", "without the IRM objective (sparsity alone)"),
                       ("painvrl last round", "with the last round's mask (no averaging over rounds)")):
        rows = by[name]
        if not rows:  # runs saved before the row existed
            continue
        closed = (stats(rows, "ood")[0] - erm) / gap if gap > 0 else math.nan
        lines.append(f"diagnosis: {what} painvrl closes {closed:.2f} of the OOD gap at IID ratio "
                     f"{stats(rows, 'iid')[0] / stats(by['erm'], 'iid')[0]:.2f}, mask AUC {stats(rows, 'auc')[0]:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="concurrent runs (processes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=V")
    parser.add_argument("--json", default=None, help="write every run's numbers here")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                        help="run nothing: pool the runs saved by earlier --json runs (e.g. two seed ranges of the "
                             "same code and overrides) and print their table and checks")
    parser.add_argument("--against", nargs="+", default=None, metavar="FILE",
                        help="with --from-json: also print, per row, the paired per-seed difference of the pooled "
                             "runs minus the runs saved in these files (the same rows under another setting)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.from_json:
        results = [r for path in args.from_json for r in json.loads(Path(path).read_text())]
        seeds = sorted({r["seed"] for r in results})
        for name, _ in RUNS:
            recorded = {tuple(r["overrides"]) for r in results if r["name"] == name and r.get("overrides") is not None}
            if len(recorded) > 1:
                raise SystemExit(f"--from-json: runs of {name!r} were made with different overrides {sorted(recorded)}")
    else:
        tasks = [(name, [*ov, *args.overrides], seed) for name, ov in RUNS for seed in args.seeds]
        threads = max(1, 2 // max(args.jobs, 1))
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                results = list(pool.map(run_one, *zip(*tasks, strict=True), [threads] * len(tasks)))
        else:
            results = [run_one(name, ov, seed, threads) for name, ov, seed in tasks]
        seeds = list(args.seeds)
    by: dict[str, list[dict[str, Any]]] = {name: [r for r in results if r["name"] == name] for name, _ in RUNS}
    source = f"pooled from {', '.join(args.from_json)}" if args.from_json else f"overrides {args.overrides or 'none'}"
    print(f"\nsynthetic benchmark, seeds {seeds}, {source} ({time.perf_counter() - started:.0f}s)")
    header = (f"{'method':<22} {'IID recall@20':>17} {'OOD recall@20':>17} {'mask AUC':>15} {'logit AUC':>15} "
              f"{'env ARI':>15} {'spurious open':>15} {'invariant open':>15} {'sel. epoch':>13} {'sec':>5}")
    print(header)
    print("-" * len(header))
    for name, rows in by.items():
        if not rows:
            continue
        print(f"{name:<22} {fmt(rows, 'iid'):>17} {fmt(rows, 'ood'):>17} {fmt(rows, 'auc', 3):>15} "
              f"{fmt(rows, 'auc_logits', 3):>15} {fmt(rows, 'ari', 3):>15} {fmt(rows, 'spurious_open', 3):>15} "
              f"{fmt(rows, 'invariant_open', 3):>15} {fmt(rows, 'epoch', 1):>13} {stats(rows, 'seconds')[0]:>5.0f}")
    print()
    for label, ok, detail in checks(by):
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
    for line in diagnosis(by):
        print(line)
    print()
    for line in paired_lines(by):
        print(line)
    if args.against:
        other = [r for path in args.against for r in json.loads(Path(path).read_text())]
        print()
        for line in against_lines(by, other):
            print(line)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
