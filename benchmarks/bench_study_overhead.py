"""Fixed cost per study trial (Ray Train start + teardown) against the trial's compute.

Runs the default study's base config (the shipped ``default`` study, unchanged: no epochs shrunk) as a short study
(``--trials`` trials, one at a time, same sampler seed so every mode samples the same configurations) in three
modes, each in a fresh process with a fresh local Ray:

- ``inprocess``:    trial_num_workers=0 (the pipeline runs inside the Tune trial actor), 1 CPU.
- ``train-fast``:   trial_num_workers=2 Ray Train (TorchTrainer, gloo) runs, the driver's fast Ray Train settings
                    (reuse_actors=True, RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0, RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1,
                    RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION=0, include_dashboard=False, 256 MiB object store).
- ``train-default``: the same Train trials with Ray's defaults, overriding the driver: the three RAY_TRAIN_*
                    variables set to Ray's defaults (1, 2.0, 1) before the driver's setdefault, Ray started here
                    with the dashboard and the default object store (the driver then reuses it), and
                    reuse_actors=False (ray.tune.TuneConfig wrapped in this benchmark process only).

Per trial, wall = Tune's ``time_total_s`` (trial start to last report: for Train trials this includes starting
the TorchTrainer controller and 2 worker processes, the gloo group, data loading in the workers, checkpoints and
teardown); compute = metrics.json ``timing.total`` (run_pipeline's own clock: pretrain + mask + final + eval).
overhead = wall - compute. Note: in Train trials every ray.train.report blocks until Ray Train's controller drains
the worker's result queue (maxsize 1), which it polls every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default, 0.1
s with the fast settings: painvrl/study/driver.py): that wait lands inside "compute" (the pipeline reports at every
evaluation and mask epoch; ``reports`` counts the results Tune received). Tune's time_total_s sums the time the
driver waited for each result, so it can undercount by the driver's own per-result work (the MLflow callback):
Optuna's ask -> tell interval is printed beside it as the upper bracket. The study wall (ray.init through the front
and report) is printed too: it adds the gaps between trials (actor start when actors are not reused) and the fixed
per-study cost.

    python benchmarks/bench_study_overhead.py                 # 3 trials per mode, about 5-8 minutes on 2 cores
    python benchmarks/bench_study_overhead.py --trials 2 --modes inprocess train-fast
    python benchmarks/bench_study_overhead.py --study tiktok --modes inprocess train-fast \
        --set "search.model.name={kind: categorical, choices: [vbpr]}"          # at the TikTok size
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = "default"
MODES = ("inprocess", "train-fast", "train-default")
RAY_TRAIN_DEFAULTS = {  # Ray 2.60 defaults (ray/train/v2/_internal/constants.py)
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "1",
}


def _child(mode: str, trials: int, storage: Path, out: Path, study: Path, overrides: list[str]) -> None:
    """One mode in this (fresh) process: run the study, write per-trial timings to ``out``."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from painvrl.study.spec import load_study

    workers = 0 if mode == "inprocess" else 2
    spec = load_study(study, [*overrides, f"storage_dir={storage}", f"name=overhead-{mode}",
                              f"num_samples={trials}", "max_concurrent_trials=1", f"trial_num_workers={workers}",
                              "trial_cpus=1", "erm_baseline=false", "baselines=[]", f"ray_num_cpus={1 + workers}"])
    started = time.perf_counter()
    if mode == "train-default":
        import ray
        from ray import tune

        os.environ.update(RAY_TRAIN_DEFAULTS)  # the driver only setdefault()s its fast values
        ray.init(num_cpus=1 + workers, include_dashboard=True, runtime_env={"env_vars": RAY_TRAIN_DEFAULTS})
        original = tune.TuneConfig

        def tune_config(*args: Any, **kwargs: Any) -> Any:
            kwargs["reuse_actors"] = False
            return original(*args, **kwargs)

        tune.TuneConfig = tune_config  # type: ignore[misc,assignment]
    from painvrl.analysis.publish import publish_study
    from painvrl.study.driver import run_study

    publish_study(run_study(spec))
    study_wall = time.perf_counter() - started
    import optuna

    optuna_study = optuna.load_study(study_name=spec.name, storage=spec.optuna_url())
    asked_to_told = {str(t.user_attrs.get("tune_trial_id")): (t.datetime_complete - t.datetime_start).total_seconds()
                     for t in optuna_study.trials if t.datetime_complete is not None and t.datetime_start is not None}
    rows = []
    for result_file in sorted((spec.study_dir() / "tune" / spec.name).glob("*/result.json")):
        lines = result_file.read_text().strip().splitlines()
        last = json.loads(lines[-1])
        metrics = json.loads(last["metrics_json"])
        rows.append({"trial": last["trial_id"], "wall": float(last["time_total_s"]),
                     "compute": float(metrics["timing"]["total"]), "timing": metrics["timing"],
                     "reports": len(lines), "optuna": asked_to_told.get(str(last["trial_id"]), float("nan")),
                     "date": last.get("date", "")})
    rows.sort(key=lambda r: r["date"])
    out.write_text(json.dumps({"mode": mode, "study_wall": study_wall, "trials": rows}))


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3, help="trials per mode (default: %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--study", default=DEFAULT_STUDY,
                        help="study YAML or shipped study name whose base config the trials run "
                             "(default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study field, as painvrl study --set (repeatable)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--storage", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from painvrl.study.shipped import resolve_study_config

    args.study = resolve_study_config(args.study)
    if args.child:
        _child(args.child, args.trials, args.storage, args.out, args.study.resolve(), args.overrides)
        return 0

    env = dict(os.environ)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))})
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", *RAY_TRAIN_DEFAULTS):
        env.pop(key, None)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for mode in args.modes:
            out = Path(tmp) / f"{mode}.json"
            command = [sys.executable, __file__, "--child", mode, "--trials", str(args.trials),
                       "--storage", tmp, "--out", str(out), "--study", str(args.study.resolve()),
                       *(f"--set={o}" for o in args.overrides)]
            print(f"running {mode} ({args.trials} trials) ...", file=sys.stderr, flush=True)
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0 or not out.exists():
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results[mode] = json.loads(out.read_text())

    load = os.getloadavg()[0]
    print(f"\nStudy trial overhead: base config of {args.study.name} {args.overrides or ''}, "
          f"{args.trials} trials per mode, 1 at a time, {os.cpu_count()} CPUs, load {load:.1f}")
    print("\nper trial (seconds; wall = Tune time_total_s, compute = metrics.json timing.total)")
    print("(optuna = Optuna ask -> tell: also covers the trial actor's start and the final report's trip)")
    print(f"{'mode':<14} {'trial':>5} {'wall':>7} {'compute':>8} {'overhead':>9} {'optuna':>7} {'reports':>7}"
          "  phases (pretrain/mask/final/eval)")
    for mode, result in results.items():
        for i, row in enumerate(result["trials"]):
            t = row["timing"]
            phases = "/".join(f"{t.get(k, 0.0):.1f}" for k in ("pretrain", "mask", "final", "evaluate"))
            print(f"{mode:<14} {i:>5} {row['wall']:>7.1f} {row['compute']:>8.1f} {row['wall'] - row['compute']:>9.1f}"
                  f" {row['optuna']:>7.1f} {row['reports']:>7}  {phases}")
    print("\nsummary (mean ± std over trials; seconds)")
    header = (f"{'mode':<14} {'wall/trial':>12} {'compute':>12} {'overhead':>12} {'overhead/compute':>17} "
              f"{'study wall':>11} {'study wall/trial':>17}")
    print(header)
    means: dict[str, dict[str, float]] = {}
    for mode, result in results.items():
        walls = [r["wall"] for r in result["trials"]]
        computes = [r["compute"] for r in result["trials"]]
        overheads = [w - c for w, c in zip(walls, computes, strict=True)]
        n = max(1, len(walls))
        means[mode] = {"wall": statistics.mean(walls), "compute": statistics.mean(computes),
                       "overhead": statistics.mean(overheads), "study": result["study_wall"] / n}
        ratio = means[mode]["overhead"] / means[mode]["compute"]
        print(f"{mode:<14} {_fmt(walls):>12} {_fmt(computes):>12} {_fmt(overheads):>12} {ratio:>16.2f}x "
              f"{result['study_wall']:>11.1f} {result['study_wall'] / n:>17.1f}")
    print("\nratios (same run)")
    if "inprocess" in means:
        for mode in ("train-fast", "train-default"):
            if mode in means:
                m, base = means[mode], means["inprocess"]
                print(f"  {mode} / inprocess:      wall/trial {m['wall'] / base['wall']:.2f}x, "
                      f"study wall/trial {m['study'] / base['study']:.2f}x, "
                      f"extra overhead per trial {m['overhead'] - base['overhead']:+.1f} s")
    if "train-fast" in means and "train-default" in means:
        fast, slow = means["train-fast"], means["train-default"]
        print(f"  train-default / train-fast: wall/trial {slow['wall'] / fast['wall']:.2f}x, "
              f"study wall/trial {slow['study'] / fast['study']:.2f}x, "
              f"overhead {slow['overhead']:.1f} s -> {fast['overhead']:.1f} s per trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
