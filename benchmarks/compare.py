"""Backbones x methods on real data: IID test on the data's published split, OOD test on the popularity-shift
split of the same data (one split, drawn with dataset.seed 0), mean ± standard error over training seeds,
with wall time and peak RSS per run.

Each (backbone, method, seed) trains twice through :func:`painvrl.training.pipeline.run_pipeline`: once on the
published split (``dataset.ood=none``: its IID test is the published test set) and once on the popularity-shift
split (``dataset.ood=popularity``: a popularity-flattened sample of all positives becomes OOD validation and
test). Selection reads validation only. Every run is logged to one MLflow experiment (sqlite by default); the
table is printed as Markdown and, with ``--results-section``, written into docs/results.md between the markers
``<!-- compare:NAME -->`` and ``<!-- /compare:NAME -->``.

The training schedule of every run is the one below (``SCHEDULE``, overridable with ``--set``): a cap of 400
epochs with early stopping after 6 validation checks (30 epochs) without gain, which real sets need where the
package default (30 epochs) is a short synthetic schedule.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/compare.py --data data/tiktok \\
        --models lightgcn vbpr mmgcn lattice freedom bm3 --methods erm invrl painvrl --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import re
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = ["train.epochs=400", "train.eval_every=5", "train.patience=6", "train.batch_size=2048",
            "train.progress=false"]
SPLITS = {"published": ["dataset.ood=none"], "popularity": ["dataset.ood=popularity"]}
METRICS = ("recall@20", "ndcg@20")


def run_one(data: str, model: str, method: str, seed: int, split: str, overrides: list[str],
            threads: int) -> dict[str, Any]:
    """One run in a fresh process (its peak RSS is its own)."""
    import torch

    torch.set_num_threads(threads)
    from painvrl.config import load_config
    from painvrl.console import configure_logging
    from painvrl.data.registry import load_dataset
    from painvrl.distributed.collective import LocalCollective
    from painvrl.training.pipeline import run_pipeline

    configure_logging(False)
    config = load_config(None, ["dataset.name=mmrec", f"dataset.path={data}", "dataset.split=explicit",
                                *SPLITS[split], f"model.name={model}", f"method={method}",
                                "dataset.seed=0", f"train.seed={seed}", *SCHEDULE, *overrides])
    started = time.perf_counter()
    result = run_pipeline(config, load_dataset(config.dataset), LocalCollective(), None)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "method": method, "seed": seed, "split": split, "wall_s": wall, "peak_rss_mb": peak_mb,
            "metrics": result.metrics, "config": config.to_dict(), "config_hash": config.config_hash()}


def log_run(tracking_uri: str, experiment_id: str, run: dict[str, Any]) -> None:
    from painvrl.study import tracking
    from painvrl.training.results import flatten_metrics

    client = tracking._client(tracking_uri)
    name = f"{run['model']}-{run['method']}-{run['split']}-s{run['seed']}"
    mlflow_run = client.create_run(experiment_id, run_name=name, tags={
        "painvrl.role": "compare", "painvrl.model": run["model"], "painvrl.method": run["method"],
        "painvrl.split": run["split"], "painvrl.git_commit": run["metrics"]["provenance"]["git_commit"]})
    run_id = mlflow_run.info.run_id
    for key, value in {"seed": run["seed"], "config_hash": run["config_hash"], "model": run["model"],
                       "method": run["method"], "split": run["split"]}.items():
        client.log_param(run_id, key, value)
    values = {**flatten_metrics(run["metrics"]), "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"],
              "selected_epoch": float(run["metrics"]["selection"]["epoch"])}
    for key, value in values.items():
        if math.isfinite(value):
            client.log_metric(run_id, tracking.metric_name(key), value)
    client.set_terminated(run_id)


def logged_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """The runs this script logged to ``experiment``, in the shape :func:`table` reads (latest run per cell)."""
    from painvrl.study import tracking

    client = tracking._client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"compare.py: no experiment {experiment!r} in {tracking_uri}")
    latest: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    runs = client.search_runs([found.experiment_id], "tags.`painvrl.role` = 'compare'", max_results=5000,
                              order_by=["attributes.start_time ASC"])
    for run in runs:
        p, m = run.data.params, run.data.metrics
        test: dict[str, dict[str, float]] = {"iid": {}, "ood": {}}
        for split in test:
            for name in METRICS:
                value = m.get(tracking.metric_name(f"test.{split}.{name}"))
                if value is not None:
                    test[split][name] = value
        if not test["ood"]:
            del test["ood"]
        latest[(p["model"], p["method"], p["split"], int(p["seed"]))] = {
            "model": p["model"], "method": p["method"], "split": p["split"], "seed": int(p["seed"]),
            "wall_s": m.get("wall_s", float("nan")), "peak_rss_mb": m.get("peak_rss_mb", float("nan")),
            "metrics": {"test": test, "selection": {"epoch": m.get("selected_epoch", float("nan"))}}}
    return list(latest.values())


def mean_se(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.4f}"
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return f"{mean:.4f} ± {math.sqrt(var / len(values)):.4f}"


def table(runs: list[dict[str, Any]], models: list[str], methods: list[str]) -> str:
    head = ("| backbone | method | IID R@20 | IID N@20 | OOD R@20 | OOD N@20 | sel. epoch | wall s | "
            "peak RSS MB | n |")
    lines = [head, "|" + "---|" * 10]
    for model in models:
        for method in methods:
            cell = [r for r in runs if r["model"] == model and r["method"] == method]
            if not cell:
                continue
            iid = [r for r in cell if r["split"] == "published"]
            ood = [r for r in cell if r["split"] == "popularity"]
            cols = [mean_se([r["metrics"]["test"]["iid"][m] for r in iid]) for m in METRICS]
            cols += [mean_se([r["metrics"]["test"]["ood"][m] for r in ood if "ood" in r["metrics"]["test"]])
                     for m in METRICS]
            epochs = [float(r["metrics"]["selection"]["epoch"]) for r in (iid or ood)]
            wall = [r["wall_s"] for r in cell]
            rss = max(r["peak_rss_mb"] for r in cell)
            lines.append(f"| {model} | {method} | " + " | ".join(cols)
                         + f" | {sum(epochs) / max(len(epochs), 1):.0f} | {sum(wall) / len(wall):.0f} | {rss:.0f} "
                           f"| {len({r['seed'] for r in cell})} |")
    return "\n".join(lines)


def write_section(path: Path, name: str, body: str) -> None:
    text = path.read_text()
    start, end = f"<!-- compare:{name} -->", f"<!-- /compare:{name} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MMRec folder (e.g. data/tiktok)")
    parser.add_argument("--models", nargs="+", default=["lightgcn", "vbpr", "mmgcn", "lattice", "freedom", "bm3"])
    parser.add_argument("--methods", nargs="+", default=["erm", "invrl", "painvrl"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=V")
    parser.add_argument("--jobs", type=int, default=1, help="concurrent runs (processes)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (0: the machine's cores divided by --jobs)")
    parser.add_argument("--mlflow", default=f"sqlite:///{ROOT / '.painvrl' / 'compare.db'}")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: compare-<data folder>)")
    parser.add_argument("--from-mlflow", action="store_true",
                        help="train nothing: build the table from the runs already logged to the experiment")
    parser.add_argument("--results-section", default=None, metavar="NAME",
                        help="write the table into docs/results.md between <!-- compare:NAME --> markers")
    args = parser.parse_args()
    from painvrl.console import configure_logging

    configure_logging(False)  # MLflow's own start-up lines stay off the table
    data = str(Path(args.data).resolve())
    experiment = args.experiment or f"compare-{Path(data).name}"
    (ROOT / ".painvrl").mkdir(exist_ok=True)
    tasks = [(data, m, meth, s, split, args.overrides) for m in args.models for meth in args.methods
             for s in args.seeds for split in args.splits]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    runs: list[dict[str, Any]] = []
    if args.from_mlflow:
        runs = [r for r in logged_runs(args.mlflow, experiment) if r["seed"] in args.seeds
                and r["split"] in args.splits]
        tasks = []
    from painvrl.study import tracking

    experiment_id = "" if not tasks else tracking.ensure_experiment(args.mlflow, experiment,
                                                                    ROOT / ".painvrl" / "compare-artifacts")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(args.jobs, 1), mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(run_one, *task, threads) for task in tasks]
        for done, future in enumerate(futures, 1):
            run = future.result()
            log_run(args.mlflow, experiment_id, run)
            runs.append(run)
            iid = run["metrics"]["test"]["iid"]["recall@20"]
            print(f"[{done}/{len(tasks)}] {run['model']} {run['method']} seed {run['seed']} {run['split']}: "
                  f"test IID R@20 {iid:.4f}, epoch {run['metrics']['selection']['epoch']}, {run['wall_s']:.0f}s, "
                  f"{run['peak_rss_mb']:.0f} MB", flush=True)
    body = table(runs, args.models, args.methods)
    command = "PYTHONPATH=. .venv/bin/python benchmarks/compare.py " + " ".join(sys.argv[1:])
    print(f"\n{body}\n\ncommand: {command}\nMLflow: {args.mlflow}, experiment {experiment}")
    if args.results_section:
        write_section(ROOT / "docs" / "results.md", args.results_section, f"{body}\n\n```\n{command}\n```")


if __name__ == "__main__":
    main()
