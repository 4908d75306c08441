"""``painvrl compare``: backbones x methods on real data. IID test on the data's published split, OOD test on
the popularity-shift split of the same data (one split, drawn with dataset.seed 0), mean ± standard error over
training seeds, with wall time and peak RSS per run.

Each (backbone, method, seed) trains twice through :func:`painvrl.training.pipeline.run_pipeline`: once on the
published split (``dataset.ood=none``: its IID test is the published test set) and once on the popularity-shift
split (``dataset.ood=popularity``: a popularity-flattened sample of all positives becomes OOD validation and
test). A MovieLens folder has no published split; its ``temporal`` split (each user's latest interactions
out of distribution) gives the IID and the OOD test of one run. Next to each method's means the table gives its
paired difference to erm over the same backbone (per seed, then mean ± standard error). Selection reads
validation only. The backbones and methods default to every registered one (methods
that need the synthetic benchmark's true mask, such as ``oracle``, excepted). Every run is logged to one MLflow
experiment (sqlite by default); the table is printed as Markdown and, with ``--results-section``, written into
a Markdown file between the markers ``<!-- compare:NAME -->`` and ``<!-- /compare:NAME -->``.

The training schedule of every run is ``SCHEDULE`` (overridable with ``--set``): a cap of 400 epochs with early
stopping after 6 validation checks (30 epochs) without gain, which real sets need where the package default
(30 epochs) is a short synthetic schedule.

    painvrl compare --data data/tiktok --models lightgcn vbpr mmgcn --methods erm painvrl --seeds 0 1 2
    painvrl compare --data data/tiktok --from-mlflow --results-section tiktok
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import shlex
import time
from pathlib import Path
from typing import Any

from painvrl.workflows import grid

SCHEDULE = ["train.epochs=400", "train.eval_every=5", "train.patience=6", "train.batch_size=2048",
            "train.progress=false"]
SPLITS = {"published": ["dataset.ood=none"], "popularity": ["dataset.ood=popularity"],
          "temporal": ["dataset.ood=temporal", "dataset.temporal_scope=user"]}
"""The split protocols: the files' published split (IID only), the popularity shift of the same data, and (a
MovieLens folder, which has timestamps) each user's latest interactions as OOD."""
SHIFTS = ("popularity", "temporal")
METRICS = ("recall@20", "ndcg@20")
ROLE = "compare"
STATE_DIR = Path(".painvrl")
"""Where the default MLflow store and its artifacts go, relative to the working directory."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="MMRec folder (e.g. data/tiktok) or MovieLens folder (e.g. data/ml-latest-small)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="backbones (default: every registered model.name)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="methods (default: every registered method that needs no true mask)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", default=["published", "popularity"], choices=list(SPLITS),
                        help="published and popularity (MMRec), popularity and temporal (MovieLens)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run (after SCHEDULE; repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="concurrent runs (processes)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (0: the machine's cores divided by --jobs)")
    parser.add_argument("--mlflow", default=None,
                        help=f"MLflow tracking URI (default: sqlite:///{STATE_DIR / 'compare.db'} in the working "
                             "directory)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: compare-<data folder>)")
    parser.add_argument("--from-mlflow", action="store_true",
                        help="train nothing: build the table from the runs already logged to the experiment")
    parser.add_argument("--results-section", default=None, metavar="NAME",
                        help="write the table into --results-file between <!-- compare:NAME --> markers")
    parser.add_argument("--results-file", type=Path, default=Path("docs/results.md"),
                        help="Markdown file of --results-section (default: %(default)s)")


def default_models() -> list[str]:
    from painvrl.model.registry import MODELS

    return list(MODELS)


def default_methods() -> list[str]:
    """The registered methods that run on any data (those reading the true mask need the synthetic benchmark)."""
    from painvrl.training.methods import METHODS

    return [name for name, method in METHODS.items() if method.mask_source != "ground_truth"]


def data_source(data: str, split: str) -> list[str]:
    """The dataset fields of ``data``: a MovieLens folder (ratings.csv) or an MMRec one (its published split)."""
    from painvrl.errors import PainvrlInputError

    if (Path(data) / "ratings.csv").is_file():
        if split == "published":
            raise PainvrlInputError(f"compare: --splits published: {data} is a MovieLens folder, which has no "
                                    "published split; use popularity or temporal")
        return ["dataset.name=movielens", f"dataset.path={data}", "dataset.split=random",
                "dataset.movielens.text_features=derived"]
    if split == "temporal":
        raise PainvrlInputError(f"compare: --splits temporal needs every interaction's timestamp, which the MMRec "
                                f"folder {data} does not hold; use published or popularity")
    return ["dataset.name=mmrec", f"dataset.path={data}", "dataset.split=explicit"]


def run_one(data: str, model: str, method: str, seed: int, split: str, overrides: list[str],
            threads: int) -> dict[str, Any]:
    """One run (in a fresh process, so its peak RSS is its own)."""
    import torch

    torch.set_num_threads(threads)
    from painvrl.config import load_config
    from painvrl.console import configure_logging
    from painvrl.data.registry import load_dataset
    from painvrl.distributed.collective import LocalCollective
    from painvrl.training.pipeline import run_pipeline

    configure_logging(False)
    config = load_config(None, [*data_source(data, split), *SPLITS[split], f"model.name={model}", f"method={method}",
                                "dataset.seed=0", f"train.seed={seed}", *SCHEDULE, *overrides])
    started = time.perf_counter()
    result = run_pipeline(config, load_dataset(config.dataset), LocalCollective(), None)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "method": method, "seed": seed, "split": split, "wall_s": wall, "peak_rss_mb": peak_mb,
            "metrics": result.metrics, "config": config.to_dict(), "config_hash": config.config_hash()}


def log_run(tracking_uri: str, experiment_id: str, run: dict[str, Any]) -> str:
    from painvrl.training.results import flatten_metrics

    tags = {"painvrl.role": ROLE, "painvrl.model": run["model"], "painvrl.method": run["method"],
            "painvrl.split": run["split"], "painvrl.git_commit": str(run["metrics"]["provenance"]["git_commit"])}
    params = {key: run[key] for key in ("seed", "config_hash", "model", "method", "split")}
    metrics = {**flatten_metrics(run["metrics"]), "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"],
               "selected_epoch": float(run["metrics"]["selection"]["epoch"])}
    return grid.log_run(tracking_uri, experiment_id, f"{run['model']}-{run['method']}-{run['split']}-s{run['seed']}",
                        tags, params, metrics)


def logged_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """The compare runs logged to ``experiment``, in the shape :func:`table` reads (latest run per cell)."""
    from painvrl.study import tracking

    latest: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for run in grid.tagged_runs(tracking_uri, experiment, ROLE):
        p, m = run.data.params, run.data.metrics
        test: dict[str, dict[str, float]] = {"iid": {}, "ood": {}}
        for split in test:
            for name in METRICS:
                value = m.get(tracking.metric_name(f"test.{split}.{name}"))
                if value is not None:
                    test[split][name] = value
        if not test["ood"]:
            del test["ood"]
        worst = m.get(tracking.metric_name("test.worst_env.recall@20"))
        if worst is not None:
            test["worst_env"] = {"recall@20": worst}
        sizes: list[int] = []
        while (key := tracking.metric_name(f"environments.size.{len(sizes)}")) in m:
            sizes.append(int(m[key]))
        environments = {"source": "learned", "sizes": sizes} if sizes else {}
        latest[(p["model"], p["method"], p["split"], int(p["seed"]))] = {
            "model": p["model"], "method": p["method"], "split": p["split"], "seed": int(p["seed"]),
            "wall_s": m.get("wall_s", float("nan")), "peak_rss_mb": m.get("peak_rss_mb", float("nan")),
            "metrics": {"test": test, "selection": {"epoch": m.get("selected_epoch", float("nan"))},
                        "environments": environments}}
    return list(latest.values())


def _split_runs(cell: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs read for IID, runs read for OOD): IID from the published split where it ran, else from the shift
    split's own IID test."""
    shifted = [r for r in cell if r["split"] in SHIFTS]
    published = [r for r in cell if r["split"] == "published"]
    return published or shifted, shifted


def _recall(run: dict[str, Any], part: str) -> float | None:
    value = run["metrics"]["test"].get(part, {}).get("recall@20")
    return None if value is None else float(value)


def paired_difference(runs: list[dict[str, Any]], reference: list[dict[str, Any]], part: str) -> str:
    """Mean ± standard error over seeds of (run - reference run of the same seed) in ``part``'s test Recall@20."""
    by_seed = {r["seed"]: _recall(r, part) for r in reference}
    diffs: list[float | None] = []
    for run in runs:
        value, base = _recall(run, part), by_seed.get(run["seed"])
        diffs.append(None if value is None or base is None else value - base)
    return grid.mean_se(diffs, signed=True)


def learned_sizes(run: dict[str, Any]) -> list[int]:
    """The sizes of the environments a run learned (HEI or EIIL), largest first; empty for a run without."""
    from painvrl.training.results import LEARNED_ENVIRONMENTS

    environments = run["metrics"].get("environments") or {}
    if environments.get("source") not in LEARNED_ENVIRONMENTS:
        return []
    return sorted((int(size) for size in environments.get("sizes") or []), reverse=True)


def environment_columns(shifted: list[dict[str, Any]]) -> list[str]:
    """The worst environment's test Recall@20 (mean ± standard error) and the environment sizes (seed means,
    largest first) of the shift-split runs that learned environments; empty cells for the others."""
    learned = [(r, sizes) for r in shifted if (sizes := learned_sizes(r))]
    if not learned:
        return ["", ""]
    worst = grid.mean_se([r["metrics"]["test"].get("worst_env", {}).get("recall@20") for r, _ in learned])
    if len({len(sizes) for _, sizes in learned}) > 1:  # runs with different environment counts: list each
        return [worst, "; ".join(" / ".join(f"{s:,}" for s in sizes) for _, sizes in learned)]
    means = [sum(column) / len(learned) for column in zip(*(sizes for _, sizes in learned), strict=True)]
    return [worst, " / ".join(f"{size:,.0f}" for size in means)]


def table(runs: list[dict[str, Any]], models: list[str], methods: list[str]) -> str:
    """The Markdown table: one row per (backbone, method) with runs, mean ± standard error over seeds, the
    paired difference to erm over the same backbone and seeds, and, for methods that learn environments, the
    worst environment's test Recall@20 and the environment sizes on the shift split."""
    head = ("| backbone | method | IID R@20 | IID N@20 | OOD R@20 | OOD N@20 | IID R@20 - erm | OOD R@20 - erm | "
            "worst env R@20 | env sizes | sel. epoch | wall s | peak RSS MB | n |")
    lines = [head, "|" + "---|" * 14]
    for model in models:
        erm_iid, erm_ood = _split_runs([r for r in runs if r["model"] == model and r["method"] == "erm"])
        for method in methods:
            cell = [r for r in runs if r["model"] == model and r["method"] == method]
            if not cell:
                continue
            iid, ood = _split_runs(cell)
            cols = [grid.mean_se([r["metrics"]["test"]["iid"].get(m) for r in iid]) for m in METRICS]
            cols += [grid.mean_se([r["metrics"]["test"].get("ood", {}).get(m) for r in ood]) for m in METRICS]
            if method == "erm" or not erm_iid:
                cols += ["", ""]
            else:
                cols += [paired_difference(iid, erm_iid, "iid"), paired_difference(ood, erm_ood, "ood")]
            cols += environment_columns(ood)
            epochs = grid.finite_mean([float(r["metrics"]["selection"]["epoch"]) for r in (iid or ood)])
            wall = grid.finite_mean([r["wall_s"] for r in cell])
            rss = max(r["peak_rss_mb"] for r in cell)
            lines.append(f"| {model} | {method} | " + " | ".join(cols)
                         + f" | {epochs:.0f} | {wall:.0f} | {rss:.0f} | {len({r['seed'] for r in cell})} |")
    return "\n".join(lines)


def write_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between ``<!-- compare:NAME -->`` and ``<!-- /compare:NAME -->`` in ``path`` (appended with
    its markers when they are not there yet)."""
    text = path.read_text()
    start, end = f"<!-- compare:{name} -->", f"<!-- /compare:{name} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def command_line(args: argparse.Namespace, models: list[str], methods: list[str]) -> str:
    """The ``painvrl compare`` command that reproduces this table."""
    words = ["painvrl", "compare", "--data", args.data, "--models", *models, "--methods", *methods,
             "--seeds", *map(str, args.seeds), "--splits", *args.splits]
    for override in args.overrides:
        words += ["--set", override]
    if args.from_mlflow:
        words.append("--from-mlflow")
    return shlex.join(words)


def supported_pairs(models: list[str], methods: list[str]) -> list[tuple[str, str]]:
    """The (backbone, method) pairs a run accepts; each refused pair is named with the reason, and a grid with
    none left is an error."""
    import sys

    from painvrl.config import load_config
    from painvrl.errors import PainvrlInputError
    from painvrl.training.checks import resolve_run

    pairs = []
    checks_log = logging.getLogger("painvrl.training.checks")
    level = checks_log.level
    checks_log.setLevel(logging.ERROR)  # the runs themselves warn where it matters
    try:
        for model in models:
            for method in methods:
                try:
                    resolve_run(load_config(None, [f"model.name={model}", f"method={method}"]))
                except PainvrlInputError as error:
                    print(f"compare: skipping {method} over {model}: {error}", file=sys.stderr)
                    continue
                pairs.append((model, method))
    finally:
        checks_log.setLevel(level)
    if not pairs:
        raise PainvrlInputError("compare: no (backbone, method) pair of --models x --methods can run")
    return pairs


def run(args: argparse.Namespace) -> int:
    from painvrl.errors import PainvrlInputError

    data = str(Path(args.data).resolve())
    if not args.from_mlflow and not Path(data).is_dir():
        raise PainvrlInputError(f"compare: --data {args.data}: no such folder")
    if args.results_section and not args.results_file.is_file():
        raise PainvrlInputError(f"compare: --results-file {args.results_file}: no such file")
    models = args.models or default_models()
    methods = args.methods or default_methods()
    experiment = args.experiment or f"compare-{Path(data).name}"
    tracking_uri = args.mlflow or f"{grid.SQLITE}{(STATE_DIR / 'compare.db').resolve()}"
    runs: list[dict[str, Any]] = []
    pairs = supported_pairs(models, methods)
    tasks = [(data, m, meth, s, split, args.overrides) for m, meth in pairs for s in args.seeds
             for split in args.splits]
    if args.from_mlflow:
        runs = [r for r in logged_runs(tracking_uri, experiment) if r["seed"] in args.seeds
                and r["split"] in args.splits]
        tasks = []
    experiment_id = "" if not tasks else grid.ensure_experiment(tracking_uri, experiment,
                                                                (STATE_DIR / "compare-artifacts").resolve())
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    for done, (_, result) in enumerate(grid.run_grid(run_one, tasks, args.jobs, threads), 1):
        log_run(tracking_uri, experiment_id, result)
        runs.append(result)
        iid = result["metrics"]["test"]["iid"]["recall@20"]
        print(f"[{done}/{len(tasks)}] {result['model']} {result['method']} seed {result['seed']} {result['split']}: "
              f"test IID R@20 {iid:.4f}, epoch {result['metrics']['selection']['epoch']}, {result['wall_s']:.0f}s, "
              f"{result['peak_rss_mb']:.0f} MB", flush=True)
    body = table(runs, models, methods)
    command = command_line(args, models, methods)
    print(f"\n{body}\n\ncommand: {command}\nMLflow: {tracking_uri}, experiment {experiment}")
    if args.results_section:
        write_section(args.results_file, args.results_section, f"{body}\n\n```\n{command}\n```")
    return 0
