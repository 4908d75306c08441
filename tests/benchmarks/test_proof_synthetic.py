"""benchmarks/proof_synthetic.py --from-json: pooling saved runs of several seed ranges into one bar check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "proof_synthetic.py"
# (iid, ood, auc) per row: a benchmark where every bar passes.
ROWS = {"erm": (0.10, 0.03, None), "oracle": (0.10, 0.07, 1.0), "invrl": (0.10, 0.04, 0.7),
        "painvrl": (0.10, 0.06, 0.95), "painvrl pref_ood=0.1": (0.11, 0.04, 0.8),
        "painvrl pref_ood=0.9": (0.09, 0.065, 0.95), "painvrl known envs": (0.10, 0.065, 0.95),
        "painvrl no IRM": (0.10, 0.035, 0.7)}


def _runs(seeds: range, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for name, (iid, ood, auc) in ROWS.items():
        for seed in seeds:
            jitter = 0.001 * (seed % 3 - 1)
            out.append({"name": name, "seed": seed, "overrides": overrides or [], "iid": iid + jitter,
                        "ood": ood + jitter, "auc": auc, "auc_logits": auc, "ari": None if auc is None else 0.0,
                        "density": 0.5, "epoch": 3 + seed % 2, "seconds": 1.0})
    return out


def _pool(tmp_path: Path, *parts: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    paths = []
    for index, part in enumerate(parts):
        path = tmp_path / f"part{index}.json"
        path.write_text(json.dumps(part))
        paths.append(str(path))
    return subprocess.run([sys.executable, str(SCRIPT), "--from-json", *paths], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})


def test_two_seed_ranges_pool_into_one_table(tmp_path: Path) -> None:
    result = _pool(tmp_path, _runs(range(0, 3)), _runs(range(3, 6)))
    assert result.returncode == 0, result.stderr
    assert "seeds [0, 1, 2, 3, 4, 5], pooled from" in result.stdout
    assert "FAIL" not in result.stdout and result.stdout.count("PASS") == 6
    assert "sel. epoch" in result.stdout and "3.5 ± 0.5" in result.stdout  # selected epochs 3, 4, 3, 4, 3, 4
    assert "gap closed 0.75" in result.stdout  # (0.06 - 0.03) / (0.07 - 0.03), jitter cancels over the seeds


def test_runs_made_with_different_overrides_are_not_pooled(tmp_path: Path) -> None:
    result = _pool(tmp_path, _runs(range(0, 3)), _runs(range(3, 6), ["mask.pref_ood=0.7"]))
    assert result.returncode != 0
    assert "different overrides" in result.stderr


def test_paired_differences_cancel_the_world_to_world_spread(tmp_path: Path) -> None:
    # Every row moves with the seed by the same jitter (one world per seed): the paired difference is exact.
    runs = _runs(range(0, 6))
    for run in runs:
        shift = 0.02 * run["seed"]
        run["iid"] += shift
        run["ood"] += shift
    result = _pool(tmp_path, runs)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith("painvrl ") and " - invrl" in ln)
    assert "IID +0.0000 ± 0.0000" in line and "OOD +0.0200 ± 0.0000" in line and "n=6" in line
    assert "oracle" in result.stdout.split("paired per-seed differences")[1]
