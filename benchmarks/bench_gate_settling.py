"""Do IMG's gates settle before a round's last epoch? One painvrl run per suite configuration at the package
default schedule; per round and 10-epoch window, how many gates crossed 0 (closed or reopened), the largest
per-epoch move of any gate, and the share of gates at exactly 0 at the window's end. A round whose last windows
still move gates cannot stop early on gate stability without changing its mask.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_gate_settling.py --configs default "flipped, strong"
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import torch

from painvrl.config import load_config
from painvrl.data.synthetic import make_synthetic
from painvrl.training.pipeline import run_pipeline
from painvrl.workflows.suite import GRID

WINDOW = 10


def img_epochs(config_name: str, seed: int, pref_ood: float, overrides: list[str]) -> list[dict[str, Any]]:
    config = load_config(None, ["train.progress=false", "method=painvrl", f"mask.pref_ood={pref_ood}",
                                f"dataset.seed={seed}", f"train.seed={seed}", *GRID[config_name], *overrides])
    metrics = run_pipeline(config, make_synthetic(config.dataset)).metrics
    return [r for r in metrics["mask_history"] if r.get("phase") == "img"]


def windows(epochs: list[dict[str, Any]]) -> list[str]:
    """One cell per window: crossings / largest move / share closed at its end."""
    cells = []
    for start in range(0, len(epochs), WINDOW):
        part = epochs[start:start + WINDOW]
        crossed = sum(int(r["gates_crossed"]) for r in part)
        largest = float(np.mean([r["gate_change_max"] for r in part]))
        cells.append(f"{crossed} / {largest:.2f} / {part[-1]['fraction_closed']:.2f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["default"], choices=sorted(GRID))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pref-ood", type=float, default=0.9)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=V")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    header = None
    for name in args.configs:
        epochs = img_epochs(name, args.seed, args.pref_ood, args.overrides)
        for round_index in sorted({int(r["round"]) for r in epochs}):
            cells = windows([r for r in epochs if r["round"] == round_index])
            if header is None:
                spans = [f"epochs {i * WINDOW + 1}-{(i + 1) * WINDOW}" for i in range(len(cells))]
                header = ["configuration", "round", *spans]
                print("| " + " | ".join(header) + " |")
                print("|" + "---|" * len(header))
            print(f"| {name} | {round_index} | " + " | ".join(cells) + " |")
    print(f"\ncells: gates that crossed 0 in the window / mean per-epoch largest gate move / share of gates at 0 "
          f"(painvrl, pref_ood {args.pref_ood}, seed {args.seed})")


if __name__ == "__main__":
    main()
