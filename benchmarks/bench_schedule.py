"""Wall time of the painvrl pipeline under mask-learning schedules, as a ratio to erm measured in the same run.

Each run is a fresh process on the default synthetic benchmark with one torch thread; the schedules are
interleaved over ``--repeats`` passes (erm, then every schedule, then erm again, ...), so machine noise hits
them alike, and the table shows the median over the passes, the phase split (pretraining, mask learning, final
model) and the run's OOD / IID test recall@20.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_schedule.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES: dict[str, list[str]] = {
    "erm": ["method=erm"],
    "painvrl (package default)": ["method=painvrl"],
    "painvrl, 2 rounds x 30 IMG epochs": ["method=painvrl", "painvrl.rounds=2", "mask.epochs=30"],
    "painvrl, 1 round x 60 IMG epochs": ["method=painvrl", "painvrl.rounds=1"],
    "painvrl, 5 rounds x 10 IMG epochs": ["method=painvrl", "mask.epochs=10"],
}
"""Schedule name -> overrides of the package defaults."""

CHILD = """
import json, logging, sys, time
import torch
torch.set_num_threads(1)
from painvrl.config import load_config
from painvrl.data.synthetic import make_synthetic
from painvrl.training.pipeline import run_pipeline
logging.disable(logging.WARNING)
config = load_config(None, ["train.progress=false", *sys.argv[1:]])
data = make_synthetic(config.dataset)
started = time.perf_counter()
metrics = run_pipeline(config, data).metrics
print(json.dumps({"seconds": time.perf_counter() - started, "timing": metrics.get("timing", {}),
                  "iid": metrics["test"]["iid"]["recall@20"], "ood": metrics["test"]["ood"]["recall@20"]}))
"""


def run(overrides: list[str]) -> dict[str, float | dict[str, float]]:
    done = subprocess.run([sys.executable, "-c", CHILD, *overrides], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    result: dict[str, float | dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float | dict[str, float]]]] = {name: [] for name in SCHEDULES}
    for _ in range(args.repeats):
        for name, overrides in SCHEDULES.items():
            runs[name].append(run([*args.overrides, *overrides]))
            print(f"{name}: {runs[name][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    erm = statistics.median(float(r["seconds"]) for r in runs["erm"])  # type: ignore[arg-type]
    print("| schedule | wall s (median) | / erm | pretrain s | mask s | final s | OOD R@20 | IID R@20 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        seconds = statistics.median(float(r["seconds"]) for r in results)  # type: ignore[arg-type]
        timing = results[0]["timing"]
        assert isinstance(timing, dict)
        phases = [f"{timing[p]:.1f}" if p in timing else "-" for p in ("pretrain", "mask", "final")]
        if name == "erm":
            phases[2] = f"{timing.get('train', float('nan')):.1f}"
        ood = statistics.mean(float(r["ood"]) for r in results)  # type: ignore[arg-type]
        iid = statistics.mean(float(r["iid"]) for r in results)  # type: ignore[arg-type]
        print(f"| {name} | {seconds:.1f} | {seconds / erm:.1f}x | " + " | ".join(phases)
              + f" | {ood:.3f} | {iid:.3f} |")


if __name__ == "__main__":
    main()
